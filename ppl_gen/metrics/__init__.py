"""Scores of generated and translated images: the LeNet judge classifier, FD-LeNet,
classifier Inception score, label agreement, mode coverage, cycle metrics."""
