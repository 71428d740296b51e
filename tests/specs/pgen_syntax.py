from maestrowf.datastructures.core import ParameterGenerator


def get_custom_generator(env, **kwargs)
    return ParameterGenerator()
