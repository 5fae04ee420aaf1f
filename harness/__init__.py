"""Running, measuring, sweeping, storing, reporting and checking attention benchmarks."""
