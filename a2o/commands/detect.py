"""``a2o detect --config X --classes "person,ball"``: fill the map cache for one class set.

Recipe: load config -> connect to Ray -> open the frame store of the config's grid -> run the
Ray Data detection stage for the (video, class) pairs not yet cached -> print what was computed
and what was reused.
"""

from __future__ import annotations

import logging

from a2o.commands.ray_session import connect
from a2o.config import load_config
from a2o.errors import ClassTextError

log = logging.getLogger(__name__)


def run(args) -> int:
    import ray

    from a2o.data.framestore import FrameStore, grid_key
    from a2o.detect.base import ConfigDetectorFactory
    from a2o.detect.cache import map_cache_for
    from a2o.detect.classes import ClassSet
    from a2o.detect.stage import RayDataRunner

    cfg = load_config(args.config, args.overrides)
    raw = [text.strip() for text in args.classes.split(",") if text.strip()]
    if not raw:
        raise ClassTextError('--classes is empty; pass a comma-separated list such as "person,ball"')
    class_set = ClassSet.parse(raw, where="--classes")

    from a2o.commands.console import log_dir_for, run_log
    from a2o.service import preflight_inputs

    preflight_inputs(cfg)  # before Ray starts
    with run_log(log_dir_for(cfg.storage.root), "detect") as run_log_file:
        started_ray = connect(cfg.ray.address, cfg.ray.num_cpus)
        try:
            frames_uri = cfg.storage.path("frames", grid_key(cfg.data))
            store = FrameStore(frames_uri)
            factory = ConfigDetectorFactory(cfg.detect)
            cache = map_cache_for(cfg.storage, cfg.data, cfg.detect)
            log.info("detector %s, fingerprint %s, %d videos", cfg.detect.detector, cache.fp_key, len(store))
            reader = cache.ensure_maps(class_set, store, factory, runner=RayDataRunner.from_config(cfg.detect))
        finally:
            if started_ray:
                ray.shutdown()
    say = run_log_file.print  # the summary goes to the terminal, not the log file
    stats = reader.stats
    say(f"frames:  {frames_uri}")
    say(f"maps:    {cache.root_uri}/{cache.fp_key}/r{cache.map_resolution}")
    say(f"classes: {', '.join(class_set)}")
    say(f"{'pairs':<10}{'count':>8}")
    say(f"{'requested':<10}{stats.requested_pairs:>8}")
    say(f"{'computed':<10}{stats.computed_pairs:>8}")
    say(f"{'reused':<10}{stats.reused_pairs:>8}")
    say(f"{'corrupt':<10}{stats.corrupt_pairs:>8}  (found damaged and recomputed)")
    say(f"hit ratio {stats.hit_ratio:.2f}; detector ran on {stats.detector_videos} videos "
          f"in {stats.compute_seconds:.1f} s")
    return 0
