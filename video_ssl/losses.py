"""The objectives' math as pure functions, at its contract import path; the functions
live beside the methods, in `video_ssl.methods.losses`."""
from video_ssl.methods.losses import (  # noqa: F401
    byol_loss, info_nce, mean_positive_nce, multi_positive_nce, sinkhorn,
    swapped_prediction_loss)
