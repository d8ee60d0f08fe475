//! The tensors that travel between the API, the queue and the engines: one item's inputs and
//! outputs, on the host, without the batch dimension. A leaf: it depends on nothing in the crate.

/// Element type of an input tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Elem {
    /// 32-bit float.
    F32,
    /// 64-bit integer (class labels, token ids).
    I64,
}

/// The data of one item's input tensor.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    /// float32 values, row-major.
    F32(Vec<f32>),
    /// int64 values, row-major.
    I64(Vec<i64>),
}

impl TensorData {
    /// Element count.
    pub fn len(&self) -> usize {
        match self {
            TensorData::F32(v) => v.len(),
            TensorData::I64(v) => v.len(),
        }
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The element type.
    pub fn elem(&self) -> Elem {
        match self {
            TensorData::F32(_) => Elem::F32,
            TensorData::I64(_) => Elem::I64,
        }
    }

    /// Elements `[start, end)`, as a new tensor of the same type.
    pub fn slice(&self, start: usize, end: usize) -> TensorData {
        match self {
            TensorData::F32(v) => TensorData::F32(v[start..end].to_vec()),
            TensorData::I64(v) => TensorData::I64(v[start..end].to_vec()),
        }
    }
}

/// One input tensor of one item: the shape excludes the batch dimension.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemTensor {
    /// Shape of this item's slice, without the batch dimension.
    pub shape: Vec<i64>,
    /// Its values.
    pub data: TensorData,
}

impl ItemTensor {
    /// A float tensor.
    pub fn f32(shape: Vec<i64>, data: Vec<f32>) -> ItemTensor {
        ItemTensor { shape, data: TensorData::F32(data) }
    }
    /// An int64 tensor.
    pub fn i64(shape: Vec<i64>, data: Vec<i64>) -> ItemTensor {
        ItemTensor { shape, data: TensorData::I64(data) }
    }
}

/// One output tensor of one item, always float32 on the host; the shape excludes the batch dimension.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputTensor {
    /// Shape of this item's slice.
    pub shape: Vec<i64>,
    /// Its values.
    pub data: Vec<f32>,
}
