"""Library code of the evaluation stage: metrics of every run on one common set of test images,
and the README's copy of the demo table."""
