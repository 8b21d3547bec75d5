"""One module per command group; each defines COMMANDS (click commands) for pathprune.cli."""
