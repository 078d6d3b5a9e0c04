"""Using a finished run: its checkpoint as a model, scored on a labelled split, on image files, or exported.

This package sits above the engine, which trains runs, and below experiments, reports and the CLI:

- `loading`: which checkpoint a path means (a run directory's best one, or a file), its model and info
  (`load_checkpoint`), and where the files made from it go.
- `evaluate`: the public `evaluate` and `score` of a run or checkpoint on a split (the loop itself, which the
  trainer also runs at every validation, is `engine.evaluate.evaluate_model`).
- `evalrecord`: which checkpoint an evaluation scored (path, step, SHA-256), and whether it is still that one.
- `images`: image files as a checkpoint's input, read as the run read its images.
- `predict`: the top-k classes of image files. `export`: ONNX / torch.export of the network.
"""
