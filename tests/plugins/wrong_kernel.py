"""A deliberately wrong kernel, loaded through ATTNBENCH_PLUGINS by the tests.

It is the naive kernel with a subtly wrong softmax scale: plausible-looking numbers that the
harness's accuracy gate must mark invalid.
"""

from attnbench.kernels import register_kernel
from attnbench.kernels.base import AttnInputs
from attnbench.kernels.builtin.naive import NaiveKernel


@register_kernel("wrong_scale")
class WrongScaleKernel(NaiveKernel):
    name = "wrong_scale"
    description = "naive attention with a 10% wrong softmax scale (test plugin)"

    def prepare(self, inputs, mask):
        skewed = AttnInputs(q=inputs.q, k=inputs.k, v=inputs.v, scale=inputs.scale * 1.1)
        return super().prepare(skewed, mask)
