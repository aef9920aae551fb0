"""Constants: ``moec.constant`` (inline dense value or a weight-store reference)."""
from __future__ import annotations


from moec.ir.core import Operation, ResourceRef
from moec.ir.opdef import Attr, operand_error, op
from moec.ir.types import DType, TensorType


@op("moec.constant", operands=(), attrs={"value": Attr("tensor")}, traits=("pure", "constant"))
class ConstantOp(Operation):
    """A constant tensor.  ``value`` is an inline array (small constants) or a
    ``dense_resource`` reference into the module's weight store."""

    def infer_types(self):
        v = self.attrs["value"]
        if isinstance(v, ResourceRef):
            if not self.results:
                raise operand_error(self, "a weight reference needs its result type")
            return [self.results[0].type]
        return [TensorType(DType.from_np(v.dtype), v.shape)]

    def reference(self):  # the interpreter resolves resource refs itself
        v = self.attrs["value"]
        if isinstance(v, ResourceRef):
            raise operand_error(self, "reference() of a weight needs the weight store")
        return [v]
