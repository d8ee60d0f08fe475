from bench_handler import Anomaly


class Handler(Anomaly):
    pass
