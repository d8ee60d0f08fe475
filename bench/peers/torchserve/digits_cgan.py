from bench_handler import Generator


class Handler(Generator):
    pass
