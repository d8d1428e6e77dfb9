"""`python -m video_ssl.launch --num_workers=N -- <video_ssl.train flags>`: a multi-worker
training run on this machine (see `video_ssl.training.launcher`)."""
import sys

from video_ssl.training.launcher import main

if __name__ == "__main__":
    sys.exit(main())
