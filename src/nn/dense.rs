//! The dense (fully connected) layer: `y = act(x W + b)` as one fused GEMM, and its backward
//! pass as one fused element-wise pass (activation derivative and bias gradient) plus two
//! GEMMs (weight gradient, input gradient).

use core::ops::Range;

use crate::kernels::gemm::{Blocking, Epilogue, MatMut, MatRef};
use crate::kernels::gemm_bf16::{Bf16Ref, Operand};
use crate::kernels::transpose::transpose;
use crate::kernels::vector::activation_backward_with_bias_grad;
use crate::kernels::{Activation, Precision};

/// In f32, batches of a multiple of this many rows (one vector's lanes) take the transposed
/// input gradient (see [`Dense::input_grad`]).
const TRANSPOSED_BATCH: usize = 16;

/// The parameters a layer reads: f32 values (the model's, or a trainer's copy of them) and,
/// optionally, the same values rounded to bf16 (a trainer's copy, kept by its optimiser:
/// `optim::ParamsCopy`), which bf16 products read instead of rounding the weights themselves.
#[derive(Clone, Copy, Debug)]
pub struct ParamsRef<'p> {
    pub values: &'p [f32],
    /// As long as `values`.
    pub rounded: Option<&'p [u16]>,
}

impl<'p> From<&'p [f32]> for ParamsRef<'p> {
    fn from(values: &'p [f32]) -> Self {
        ParamsRef { values, rounded: None }
    }
}

impl<'p> From<&'p alloc::vec::Vec<f32>> for ParamsRef<'p> {
    fn from(values: &'p alloc::vec::Vec<f32>) -> Self {
        ParamsRef { values, rounded: None }
    }
}

/// A dense layer's shape and where its parameters sit in the model's parameter vector.
#[derive(Clone, Debug, PartialEq)]
pub struct Dense {
    pub n_in: usize,
    pub n_out: usize,
    pub activation: Activation,
    /// Offset of the weights, `[n_in, n_out]` row-major (Keras's kernel layout).
    pub(crate) w_offset: usize,
    /// Offset of the bias, `[n_out]`, right after the weights.
    pub(crate) b_offset: usize,
}

impl Dense {
    pub(crate) fn new(n_in: usize, n_out: usize, activation: Activation, offset: usize) -> Self {
        Dense { n_in, n_out, activation, w_offset: offset, b_offset: offset + n_in * n_out }
    }

    /// Parameters owned: weights then bias.
    pub fn num_params(&self) -> usize {
        self.n_in * self.n_out + self.n_out
    }

    pub fn weights<'p>(&self, params: &'p [f32]) -> &'p [f32] {
        &params[self.w_offset..self.b_offset]
    }

    pub fn bias<'p>(&self, params: &'p [f32]) -> &'p [f32] {
        &params[self.b_offset..self.b_offset + self.n_out]
    }

    /// `y = act(x W + b)` for a batch. Softmax is row-wise and left to the model (fused
    /// with the loss in training): for a softmax layer `y` holds the logits.
    ///
    /// # Shapes
    /// `x`: `[batch, n_in]`, `y`: `[batch, n_out]`.
    pub fn forward(&self, params: &[f32], x: &[f32], y: &mut [f32], batch: usize) {
        self.forward_with(Precision::F32, params, x, y, batch)
    }

    /// The weight rows `rows` (`[rows.len(), n_out]`) as a product in `precision` reads them:
    /// the rounded copy, when the product is bf16 and `params` carry one.
    fn weights_operand<'p>(&self, params: ParamsRef<'p>, rows: Range<usize>, precision: Precision) -> Operand<'p> {
        let span = self.w_offset + rows.start * self.n_out..self.w_offset + rows.end * self.n_out;
        match (precision, params.rounded) {
            (Precision::Bf16, Some(rounded)) => Bf16Ref::new(&rounded[span], rows.len(), self.n_out).into(),
            _ => MatRef::new(&params.values[span], rows.len(), self.n_out).into(),
        }
    }

    /// [`Dense::forward`], multiplying in `precision`.
    pub fn forward_with<'p>(
        &self,
        precision: Precision,
        params: impl Into<ParamsRef<'p>>,
        x: &[f32],
        y: &mut [f32],
        batch: usize,
    ) {
        let params = params.into();
        let epilogue = Epilogue { bias: Some(self.bias(params.values)), activation: self.activation };
        precision.gemm(
            &Blocking::DEFAULT,
            1.0,
            MatRef::new(x, batch, self.n_in),
            self.weights_operand(params, 0..self.n_in, precision),
            0.0,
            MatMut::new(y, batch, self.n_out),
            epilogue,
        );
    }

    /// One thread's part of a forward pass split by input features: `partial = x_part
    /// W[features, :]`, where `x_part` (`[batch, features.len()]`) holds those columns of the
    /// input; no bias, no activation; on the calling thread, multiplying in `precision`.
    /// [`Dense::forward_from_parts`] finishes the pass from the parts' partial products
    /// (`[batch, n_out]` each).
    pub fn forward_part<'p>(
        &self,
        params: impl Into<ParamsRef<'p>>,
        x_part: &[f32],
        features: Range<usize>,
        partial: &mut [f32],
        batch: usize,
        precision: Precision,
    ) {
        precision.gemm(
            &Blocking::SERIAL,
            1.0,
            MatRef::new(x_part, batch, features.len()),
            self.weights_operand(params.into(), features, precision),
            0.0,
            MatMut::new(partial, batch, self.n_out),
            Epilogue::NONE,
        );
    }

    /// `y = act(sum of the partial products + b)` for the batch rows `rows` (`y`:
    /// `[rows.len(), n_out]`), the partial products of [`Dense::forward_part`] added in the
    /// parts' order.
    pub fn forward_from_parts<'p>(
        &self,
        params: &[f32],
        partials: impl IntoIterator<Item = &'p [f32]>,
        rows: Range<usize>,
        y: &mut [f32],
    ) {
        let span = rows.start * self.n_out..rows.end * self.n_out;
        y.fill(0.0);
        for partial in partials {
            y.iter_mut().zip(&partial[span.clone()]).for_each(|(v, p)| *v += p);
        }
        for row in y.chunks_exact_mut(self.n_out) {
            row.iter_mut().zip(self.bias(params)).for_each(|(v, b)| *v += b);
        }
        self.activation.forward(y);
    }

    /// The range of the weights in the parameter (and gradient) vector.
    pub fn weight_range(&self) -> core::ops::Range<usize> {
        self.w_offset..self.b_offset
    }

    /// Backward pass. On entry `dy` holds dL/dy; on exit it holds dL/dz (the gradient
    /// before the activation). Writes dL/dW and dL/db into this layer's part of `grads`
    /// (overwriting), and dL/dx into `dx` when given (the first layer needs none), using
    /// `scratch` as [`Dense::input_grad`] does; every product multiplies in `precision`.
    ///
    /// For softmax the caller passes dL/dz directly (softmax is fused with the loss).
    ///
    /// # Shapes
    /// `x`: `[batch, n_in]`, `y` and `dy`: `[batch, n_out]`, `dx` and `scratch`: `[batch, n_in]`.
    #[allow(clippy::too_many_arguments)]
    pub fn backward<'p>(
        &self,
        params: impl Into<ParamsRef<'p>>,
        x: &[f32],
        y: &[f32],
        dy: &mut [f32],
        grads: &mut [f32],
        dx: Option<&mut [f32]>,
        scratch: &mut [f32],
        batch: usize,
        precision: Precision,
    ) {
        self.backward_activation(y, dy, grads);
        self.weight_grad(x, dy, grads, batch, precision);
        if let Some(dx) = dx {
            self.input_grad(params, dy, dx, batch, scratch, precision);
        }
    }

    /// `dy *= act'(y)` in place (giving dL/dz), and dL/db (overwriting this layer's bias
    /// part of `grads`) in the same pass.
    pub fn backward_activation(&self, y: &[f32], dy: &mut [f32], grads: &mut [f32]) {
        let b_grad = &mut grads[self.b_offset..self.b_offset + self.n_out];
        b_grad.fill(0.0);
        activation_backward_with_bias_grad(self.activation, y, dy, self.n_out, b_grad);
    }

    /// dL/dW = x^T dz, overwriting this layer's weight part of `grads`, multiplying in
    /// `precision`.
    ///
    /// # Shapes
    /// `x`: `[batch, n_in]`, `dz`: `[batch, n_out]`.
    pub fn weight_grad(&self, x: &[f32], dz: &[f32], grads: &mut [f32], batch: usize, precision: Precision) {
        let range = self.weight_range();
        let (x, dz) = self.weight_grad_operands(x, self.n_in, dz, batch);
        precision.gemm(
            &Blocking::DEFAULT,
            1.0,
            x,
            dz,
            0.0,
            MatMut::new(&mut grads[range], self.n_in, self.n_out),
            Epilogue::NONE,
        );
    }

    /// One thread's part of the weight gradient split by input features, as
    /// [`Dense::forward_part`] splits the forward pass: the rows `features` of dL/dW (`dw`:
    /// `[features.len(), n_out]`) from those columns of the input (`x_part`: `[batch,
    /// features.len()]`), on the calling thread, multiplying in `precision`.
    pub fn weight_grad_part(
        &self,
        x_part: &[f32],
        features: Range<usize>,
        dz: &[f32],
        dw: &mut [f32],
        batch: usize,
        precision: Precision,
    ) {
        let (x, dz) = self.weight_grad_operands(x_part, features.len(), dz, batch);
        precision.gemm(&Blocking::SERIAL, 1.0, x, dz, 0.0, MatMut::new(dw, features.len(), self.n_out), Epilogue::NONE);
    }

    /// `x^T` and `dz` for `dw = x^T dz`, `x` being `[batch, inputs]`.
    fn weight_grad_operands<'v>(
        &self,
        x: &'v [f32],
        inputs: usize,
        dz: &'v [f32],
        batch: usize,
    ) -> (MatRef<'v>, MatRef<'v>) {
        (MatRef::new(x, batch, inputs).t(), MatRef::new(dz, batch, self.n_out))
    }

    /// dL/dx = dz W^T, multiplying in `precision`.
    ///
    /// A batch that fills whole vectors (a multiple of 16 rows), and any batch in bf16, takes
    /// the transposed product, `dx^T = W dz^T`, into `scratch`, then transposes it into `dx`:
    /// that product packs `dz^T` (`n_out x batch`) where this one packs `W^T` (`n_out x
    /// n_in`), in every layer at every step. 100-wide layers on Zen 4, f32: 16 rows 4.6 us for
    /// the product, 3.3 us for the transposed one; 25 rows 6.3 against 6.5 us, as other
    /// batches waste lanes in the transposed product's columns. bf16, whose transposed operands
    /// are packed through a word transpose: 16 rows 3.8 against 3.2 us, 25 rows 5.2 against 4.6.
    ///
    /// # Shapes
    /// `dz`: `[batch, n_out]`, `dx` and `scratch` (at least): `[batch, n_in]`.
    pub fn input_grad<'p>(
        &self,
        params: impl Into<ParamsRef<'p>>,
        dz: &[f32],
        dx: &mut [f32],
        batch: usize,
        scratch: &mut [f32],
        precision: Precision,
    ) {
        let w = self.weights_operand(params.into(), 0..self.n_in, precision);
        self.input_grad_from(&Blocking::DEFAULT, w, dz, dx, batch, scratch, precision);
    }

    /// [`Dense::input_grad`] from the weight rows `w` (`[rows, n_out]`, as a product in
    /// `precision` reads them: a tensor-parallel step's rows, which it keeps in an order of its
    /// own), giving those columns of dL/dx (`dx`: `[batch, rows]`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn input_grad_from(
        &self,
        blocking: &Blocking,
        w: Operand<'_>,
        dz: &[f32],
        dx: &mut [f32],
        batch: usize,
        scratch: &mut [f32],
        precision: Precision,
    ) {
        let rows = w.shape().0;
        let dz = MatRef::new(dz, batch, self.n_out);
        match w {
            Operand::F32(w) if precision == Precision::F32 && !batch.is_multiple_of(TRANSPOSED_BATCH) => {
                precision.gemm(blocking, 1.0, dz, w.t(), 0.0, MatMut::new(dx, batch, rows), Epilogue::NONE);
            }
            _ => {
                let dx_t = &mut scratch[..rows * batch];
                precision.gemm(blocking, 1.0, w, dz.t(), 0.0, MatMut::new(dx_t, rows, batch), Epilogue::NONE);
                transpose(dx_t, rows, batch, dx);
            }
        }
    }
}
