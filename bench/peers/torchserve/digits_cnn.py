from bench_handler import Classifier


class Handler(Classifier):
    pass
