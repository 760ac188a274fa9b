"""Interop: PyTorch datasets, HDF5/npy export, xarray."""
