"""Models: the retina, the attention models (RAM, DRAM) and whole-image baselines."""
