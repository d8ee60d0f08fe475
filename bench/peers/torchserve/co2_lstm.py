from bench_handler import Forecaster


class Handler(Forecaster):
    pass
