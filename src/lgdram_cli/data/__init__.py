"""Data: digit sources, canvas task generators, and the HDF5 canvas format."""
