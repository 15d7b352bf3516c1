"""Files and data contracts: ``atomic.py`` (atomic writes: no half-written file under its final
name), ``video.py`` (video clips: read, write, resize, contact sheets), ``video_outputs.py`` (where
generated videos go and how they are written: mp4, gif, png, json together), ``datasets.py`` (the
clip-dataset protocol and the log of skipped entries), ``frame_rate.py`` (frame-rate choices for
multi-frame-rate training), ``token_shards.py`` (the token-shard format ``prepare`` writes and
the dataset that reads it) and ``run_lock.py`` (one run per run folder: an advisory lock naming
its holder).
"""
