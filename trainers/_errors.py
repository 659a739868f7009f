"""The trainers' errors whose message is the whole answer: one line saying what to fix."""


class TrainError(Exception):
    """The run cannot go on (non-finite loss, wrong resume); the message says what to do."""


class EvalError(Exception):
    """Wrong encoder file or data for an evaluation, phrased as what to fix."""
