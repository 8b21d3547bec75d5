"""The model zoo of issue 27: trained timm ViTs nobody tuned pathprune on, split into a development
half and a test half (benchmarks/zoo/SPLIT.md). benchmarks/zoo/registry.py is the one place suites
read it from."""
