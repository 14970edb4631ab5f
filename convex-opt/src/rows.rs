//! The potential seen by a solver on a subset of the original rows: per-row data follows
//! through [`BatchedPotential::select_rows`].

use candle_core::{DType, Device, Tensor};

use crate::batch::index_tensor;
use crate::{BatchedPotential, ConvexOptError, SecondOrderModel};

/// A potential evaluated on the rows `rows` of the original batch: the potential itself when
/// `rows` is the whole batch in order or when it has no per-row data
/// ([`BatchedPotential::select_rows`] returned `None`), its restriction otherwise.
pub(crate) enum RowView<'p, P: ?Sized> {
    /// The original potential (whole batch, or rows without data of their own).
    Whole(&'p P),
    /// The potential restricted to a subset of the original rows.
    Restricted(Box<dyn BatchedPotential + 'p>),
}

impl<'p, P: BatchedPotential + ?Sized> RowView<'p, P> {
    /// `potential` restricted to the original rows `rows` of its batch of `n` rows (indices
    /// into the original batch, never into another restriction).
    pub(crate) fn new(
        potential: &'p P,
        rows: &[usize],
        n: usize,
        device: &Device,
    ) -> Result<Self, ConvexOptError> {
        if rows.len() == n && rows.iter().enumerate().all(|(i, &r)| i == r) {
            return Ok(Self::Whole(potential));
        }
        Ok(match potential.select_rows(&index_tensor(rows, device)?)? {
            Some(restricted) => Self::Restricted(restricted),
            None => Self::Whole(potential),
        })
    }

    fn get(&self) -> &dyn BatchedPotential {
        // `&P` with `P: ?Sized` does not coerce to `&dyn BatchedPotential`; `&&P` does.
        match self {
            Self::Whole(p) => p,
            Self::Restricted(p) => p.as_ref(),
        }
    }
}

impl<P: BatchedPotential + ?Sized> BatchedPotential for RowView<'_, P> {
    fn value_and_gradient(&self, x: &Tensor) -> Result<(Tensor, Tensor), ConvexOptError> {
        self.get().value_and_gradient(x)
    }
    fn value(&self, x: &Tensor) -> Result<Tensor, ConvexOptError> {
        self.get().value(x)
    }
    fn hvp(&self, x: &Tensor, v: &Tensor) -> Result<Tensor, ConvexOptError> {
        self.get().hvp(x, v)
    }
    fn second_order(&self, x: &Tensor) -> Result<SecondOrderModel<'_>, ConvexOptError> {
        self.get().second_order(x)
    }
    fn expected_dtype(&self) -> Option<DType> {
        self.get().expected_dtype()
    }
    fn select_rows(
        &self,
        rows: &Tensor,
    ) -> Result<Option<Box<dyn BatchedPotential + '_>>, ConvexOptError> {
        self.get().select_rows(rows)
    }
}
