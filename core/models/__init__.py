"""Models: architectures and pretrained weights, preprocessing, inference, training, metrics."""
