from maestrowf.datastructures.core import ParameterGenerator


def get_generator(env, **kwargs):
    return ParameterGenerator()
