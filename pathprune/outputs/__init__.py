"""Writing outputs safely: atomic files (:mod:`.files`), who owns an output directory
(:mod:`.ownership`), locks and claims for a run (:mod:`.locks`) and directories that appear whole
(:mod:`.directories`).

    >>> from pathprune.outputs import claim_output, write_json_atomic
    >>> with claim_output("runs/a", "analyze", in_place=True) as out:  # doctest: +SKIP
    ...     write_json_atomic(out / "run.json", {"format": "pathprune.analyze/1"})
"""

from .directories import atomic_directory
from .files import (atomic_path, current_umask, load_tensors, package_versions, read_json, save_tensors_atomic,
                    sha256_file, write_json_atomic, write_text_atomic)
from .locks import OutputLock, claim_output, remove_stale_temporaries
from .ownership import (OUTPUT_FORMAT, OUTPUT_MARKER, check_output_dir, check_output_target, directory_listing,
                        foreign_entries, output_marker, output_owner, recorded_files, remove_output,
                        write_output_marker)

__all__ = ["OUTPUT_FORMAT", "OUTPUT_MARKER", "OutputLock", "atomic_directory", "atomic_path", "check_output_dir",
           "check_output_target", "claim_output", "current_umask", "directory_listing", "foreign_entries",
           "load_tensors", "output_marker", "output_owner", "package_versions", "read_json", "recorded_files",
           "remove_output", "remove_stale_temporaries", "save_tensors_atomic", "sha256_file", "write_json_atomic",
           "write_output_marker", "write_text_atomic"]
