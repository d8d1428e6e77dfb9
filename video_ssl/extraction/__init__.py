"""Features of any video collection: the library behind `python -m video_ssl.extract`.

- `encoder.load_model(path, encoder)`: a training run's encoder or an exported
  SavedModel as one `Encoder` (forward function, modality, evaluation view, flow
  settings);
- `inputs.list_videos(input, ...)`: the videos of a class folder, a CSV or TFRecord
  shards, and how files are read; `inputs.file_features`: the parsed features (what
  the pipeline's parser gives) of what was read;
- `decoding.read_files(...)`: files read in order, only the frames the clips take, in
  worker processes (`workers.Pool`, no TensorFlow);
- `sampling.Sampling`: `--clips` or `--window_s/--stride_s`, clips of one video;
- `output.ChunkedOutput`: the resumable OUT/ folder;
- `run.extract(...)`: them wired together;
- `neighbours.save_sheet(OUT, k)`: OUT/neighbours.png of a finished extraction.
"""
