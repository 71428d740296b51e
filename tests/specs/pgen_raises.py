from maestrowf.datastructures.core import ParameterGenerator


def get_custom_generator(env, **kwargs):
    raise RuntimeError("the CSV has no header\nsecond line of detail")
