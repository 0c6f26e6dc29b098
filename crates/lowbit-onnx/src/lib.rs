//! ONNX interop: TensorProto and .npy tensor I/O
