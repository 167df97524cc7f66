"""Every face of a photo, a folder, a video or a camera: boxes, labels, tracks and annotated copies.

``sources`` turns ``--source`` into photos or frames, ``finder`` finds and
classifies all faces of one frame in one batch, ``tracking`` links faces of
a video across frames (ByteTrack from Roboflow's ``trackers``) and smooths
each track's answer, ``output`` writes faces.csv and the annotated copies,
``pipeline`` runs them, and ``scoring`` scores scenes with labelled boxes.
"""
