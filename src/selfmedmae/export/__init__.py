"""``selfmedmae export``: a checkpoint as a folder to share (safetensors weights, resolved config, model card,
optionally ONNX), and the reading of such a folder back (:func:`selfmedmae.models.exported.read_exported`)."""
