//! The candle side of every fast op, written once.
//!
//! A kernel implements [`CpuOp`]: its forward on the inputs' contiguous f32 data and,
//! if it is differentiable, its backward on tensors. [`custom_op!`] then writes the
//! `CustomOp1`/`CustomOp2`/`CustomOp3` impl that candle calls: the op's name, the storage
//! checks (f32, contiguous, on the CPU: errors name the op), wrapping the output, and the
//! backward's argument plumbing.

use candle_core::{bail, Layout, Result, Shape, Storage, Tensor};

use super::storage::slice;

/// A fast CPU kernel over `N` f32 tensors.
pub(crate) trait CpuOp<const N: usize> {
    /// candle's name of the op (shown in its errors and graph dumps).
    const NAME: &'static str;
    /// The name error messages use: the public function's, e.g. `conv2d`.
    const OP: &'static str;

    /// The forward on the inputs' data (`xs[i]` laid out as `ls[i]`, contiguous): the output
    /// and its shape.
    fn forward(&self, xs: [&[f32]; N], ls: [&Layout; N]) -> Result<(Vec<f32>, Shape)>;

    /// The gradients of the inputs, given the inputs, the forward's result `res` and the
    /// gradient `dres` of the loss w.r.t. `res`. Ops only ever applied with candle's
    /// `apply_op*_no_bwd` keep this default, which reports that they have no backward.
    fn backward(
        &self,
        _xs: [&Tensor; N],
        _res: &Tensor,
        _dres: &Tensor,
    ) -> Result<[Option<Tensor>; N]> {
        Err(candle_core::Error::BackwardNotSupported { op: Self::NAME })
    }
}

/// Runs `f` on the contiguous f32 CPU data of all of `ts` at once (each made contiguous
/// first if needed); `op` names the operation in errors.
pub(crate) fn with_all<const N: usize, R>(
    op: &str,
    ts: [&Tensor; N],
    f: impl FnOnce([&[f32]; N]) -> R,
) -> Result<R> {
    let ts = ts
        .into_iter()
        .map(Tensor::contiguous)
        .collect::<Result<Vec<_>>>()?;
    let guards: Vec<_> = ts.iter().map(Tensor::storage_and_layout).collect();
    let mut data = Vec::with_capacity(N);
    for (storage, layout) in &guards {
        match &**storage {
            Storage::Cpu(s) => data.push(slice(op, s, layout)?),
            _ => bail!("{op}: expected a CPU tensor"),
        }
    }
    let Ok(data) = <[&[f32]; N]>::try_from(data) else {
        bail!("{op}: expected {N} tensors")
    };
    Ok(f(data))
}

/// Implements candle's `CustomOp1`, `CustomOp2` or `CustomOp3` for a type that implements
/// [`CpuOp`] with 1, 2 or 3 inputs: `custom_op!(AddRelu: CustomOp2);`.
macro_rules! custom_op {
    ($t:ty: CustomOp1) => {
        impl candle_core::CustomOp1 for $t {
            fn name(&self) -> &'static str {
                <$t as $crate::ops::custom::CpuOp<1>>::NAME
            }

            fn cpu_fwd(
                &self,
                s: &candle_core::CpuStorage,
                l: &candle_core::Layout,
            ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
                use $crate::ops::custom::CpuOp;
                const OP: &str = <$t as CpuOp<1>>::OP;
                let x = $crate::ops::storage::slice(OP, s, l)?;
                let (y, shape) = CpuOp::<1>::forward(self, [x], [l])?;
                Ok((candle_core::CpuStorage::F32(y), shape))
            }

            fn bwd(
                &self,
                x: &candle_core::Tensor,
                res: &candle_core::Tensor,
                dres: &candle_core::Tensor,
            ) -> candle_core::Result<Option<candle_core::Tensor>> {
                let [dx] = $crate::ops::custom::CpuOp::<1>::backward(self, [x], res, dres)?;
                Ok(dx)
            }
        }
    };
    ($t:ty: CustomOp2) => {
        impl candle_core::CustomOp2 for $t {
            fn name(&self) -> &'static str {
                <$t as $crate::ops::custom::CpuOp<2>>::NAME
            }

            fn cpu_fwd(
                &self,
                s1: &candle_core::CpuStorage,
                l1: &candle_core::Layout,
                s2: &candle_core::CpuStorage,
                l2: &candle_core::Layout,
            ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
                use $crate::ops::custom::CpuOp;
                use $crate::ops::storage::slice;
                const OP: &str = <$t as CpuOp<2>>::OP;
                let xs = [slice(OP, s1, l1)?, slice(OP, s2, l2)?];
                let (y, shape) = CpuOp::<2>::forward(self, xs, [l1, l2])?;
                Ok((candle_core::CpuStorage::F32(y), shape))
            }

            fn bwd(
                &self,
                a: &candle_core::Tensor,
                b: &candle_core::Tensor,
                res: &candle_core::Tensor,
                dres: &candle_core::Tensor,
            ) -> candle_core::Result<(Option<candle_core::Tensor>, Option<candle_core::Tensor>)>
            {
                let [da, db] = $crate::ops::custom::CpuOp::<2>::backward(self, [a, b], res, dres)?;
                Ok((da, db))
            }
        }
    };
    ($t:ty: CustomOp3) => {
        impl candle_core::CustomOp3 for $t {
            fn name(&self) -> &'static str {
                <$t as $crate::ops::custom::CpuOp<3>>::NAME
            }

            fn cpu_fwd(
                &self,
                s1: &candle_core::CpuStorage,
                l1: &candle_core::Layout,
                s2: &candle_core::CpuStorage,
                l2: &candle_core::Layout,
                s3: &candle_core::CpuStorage,
                l3: &candle_core::Layout,
            ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
                use $crate::ops::custom::CpuOp;
                use $crate::ops::storage::slice;
                const OP: &str = <$t as CpuOp<3>>::OP;
                let xs = [slice(OP, s1, l1)?, slice(OP, s2, l2)?, slice(OP, s3, l3)?];
                let (y, shape) = CpuOp::<3>::forward(self, xs, [l1, l2, l3])?;
                Ok((candle_core::CpuStorage::F32(y), shape))
            }

            #[allow(clippy::type_complexity)]
            fn bwd(
                &self,
                a: &candle_core::Tensor,
                b: &candle_core::Tensor,
                c: &candle_core::Tensor,
                res: &candle_core::Tensor,
                dres: &candle_core::Tensor,
            ) -> candle_core::Result<(
                Option<candle_core::Tensor>,
                Option<candle_core::Tensor>,
                Option<candle_core::Tensor>,
            )> {
                let [da, db, dc] =
                    $crate::ops::custom::CpuOp::<3>::backward(self, [a, b, c], res, dres)?;
                Ok((da, db, dc))
            }
        }
    };
}
pub(crate) use custom_op;
