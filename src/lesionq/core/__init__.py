"""Pure numerical core: numpy / scipy / scikit-image / dask.array only.

No file paths, no nibabel, no SimpleITK, no nipype. Functions take arrays plus
explicit geometry (voxel sizes in mm, or a 4x4 voxel-to-RAS affine in mm) and
return arrays or frozen dataclasses.
"""
