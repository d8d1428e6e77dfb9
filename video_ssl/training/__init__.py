"""The training machinery behind `python -m video_ssl.train`: the run in named phases
(`runner`), the training loop for every strategy (`loop`), its callbacks, the run
lock, the gin binding checks, CoCLR's stage schedule (`stages`) and the local
multi-worker launcher (`launcher`). It knows no method: methods are handed to it
(tests/test_layering.py)."""
