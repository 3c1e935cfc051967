"""Datasets: 2-D toys with true densities, image datasets (nothing downloaded at run time)."""
