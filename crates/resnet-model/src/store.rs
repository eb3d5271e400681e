//! A read-only `VarBuilder` backend over the model's own variables.

use std::collections::BTreeMap;

use candle_core::{DType, Device, Result, Shape, Tensor, Var};
use candle_nn::Init;

/// Serves existing variables by name; a missing name or a shape mismatch is an error (it
/// never creates a tensor, so nothing is initialized behind the caller's back).
pub(crate) struct VarStore {
    pub(crate) vars: BTreeMap<String, Var>,
}

impl VarStore {
    fn lookup(&self, name: &str, dtype: DType, dev: &Device) -> Result<&Var> {
        let var = self
            .vars
            .get(name)
            .ok_or_else(|| candle_core::Error::msg(format!("model has no tensor `{name}`")))?;
        if var.dtype() != dtype || !var.device().same_device(dev) {
            candle_core::bail!(
                "tensor `{name}` is {:?} on {:?}, requested {dtype:?} on {dev:?}",
                var.dtype(),
                var.device()
            );
        }
        Ok(var)
    }
}

impl candle_nn::var_builder::SimpleBackend for VarStore {
    fn get(&self, s: Shape, name: &str, _h: Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        let var = self.lookup(name, dtype, dev)?;
        if var.shape() != &s {
            candle_core::bail!(
                "tensor `{name}` has shape {:?}, expected {:?}",
                var.dims(),
                s.dims()
            );
        }
        Ok(var.as_tensor().clone())
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> Result<Tensor> {
        Ok(self.lookup(name, dtype, dev)?.as_tensor().clone())
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.vars.contains_key(name)
    }
}
