"""Exporting a trained run: ONNX graph, torch.export program, or a self-describing folder."""
