"""Running an export folder without torch: ONNX Runtime, NumPy, Pillow, soundfile and tokenizers.

    predictor = grove.load("runs/digits-cnn/.../export")     # an ExportedPredictor
    predictor.predict(["three.png"])                         # what `grove.load(run).predict` gives

    manifest   export.json: the contract between `grove export` and this package
    inputs     decoding one user input (image, audio file) exactly as training decoded it
    decoding   CTC decoding and next-token sampling on NumPy arrays
    session    opening a graph: ONNX Runtime (or a torch.export program for --format pt2)
    predictor  ExportedPredictor: the Predictor API over an export folder

Nothing here imports torch (a test runs each modality in a fresh interpreter and checks
sys.modules), so a deployment installs onnxruntime and numpy instead of PyTorch. The one
exception is the pt2 backend, which is a PyTorch deployment by definition. grove's data and
task code use `inputs` and `decoding` too, so training, eager prediction and the runtime share
one implementation of each step.
"""
