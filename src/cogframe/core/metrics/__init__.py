"""Scores of generated videos on the synthetic moving-shapes domain: ``detector.py`` (the pixel
detector of colour, shape and direction behind ``cogframe eval``) and ``motion.py`` (motion
metrics of a clip: straightness, forward steps and drift of the object's path, background
flicker) and ``video_classifier.py`` (a small 3D-convolutional clip classifier of the domain, whose
embedding FVD-style distances are computed on) and ``frechet.py`` (the Fréchet distance between two
sets of clips on that embedding: an offline analogue of FVD).
"""
