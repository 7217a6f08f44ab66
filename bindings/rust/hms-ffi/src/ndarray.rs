//! numpy arrays (`HMS_CT_NDARRAY`, the layout in hms_ffi.h's arena section) read in place.
//! Safe code: the one cast from bytes to numbers is `ffi::cast_slice`.

use crate::error::{Code, Error, Result};
use crate::ffi::{cast_slice, Primitive};

const FIXED: usize = 40;

/// A numpy array decoded IN PLACE over `&'a [u8]`: the header is copied out and checked (magic,
/// sizes, dtype, and that every element the shape and strides reach lies inside the data); the data
/// stays where it is (for an in-place or taken request: the sender's arena block, no copy).
#[derive(Debug, Clone)]
pub struct NdArray<'a> {
    /// numpy array-interface type string: "<f8", "|u1", ...
    pub dtype: String,
    pub shape: Vec<i64>,
    /// Bytes per step in each dimension (may be negative or 0).
    pub strides: Vec<i64>,
    pub itemsize: usize,
    data: &'a [u8],
    base: usize,
}

fn bad(msg: String) -> Error {
    Error::new(Code::InvalidArgument, format!("ndarray: {msg}"))
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

fn itemsize_of(dt: &str) -> Result<usize> {
    let b = dt.as_bytes();
    if b.len() < 3 || !b"<>|=".contains(&b[0]) {
        return Err(bad(format!("dtype {dt:?} is not a numpy type string")));
    }
    if b[1] == b'O' {
        return Err(bad(format!("dtype {dt:?} (Python objects) cannot cross processes")));
    }
    let digits = dt[2..].split('[').next().unwrap_or("");
    let n: usize = digits.parse().map_err(|_| bad(format!("dtype {dt:?} has no valid item size")))?;
    if n == 0 || n > 1 << 20 {
        return Err(bad(format!("dtype {dt:?} has no valid item size")));
    }
    Ok(if b[1] == b'U' { n * 4 } else { n })
}

impl<'a> NdArray<'a> {
    /// Validates the header of an `HMS_CT_NDARRAY` payload; the data is not copied.
    /// Errors: `InvalidArgument` naming what is wrong.
    pub fn decode(src: &'a [u8]) -> Result<NdArray<'a>> {
        if src.len() < FIXED {
            return Err(bad(format!("{} bytes cannot hold an ndarray header (at least {FIXED})", src.len())));
        }
        // Copy the header out once: the payload may be shared memory its writer still changes.
        let mut fixed = [0u8; FIXED];
        fixed.copy_from_slice(&src[..FIXED]);
        if &fixed[..4] != b"HMND" {
            return Err(bad(format!("bad magic {:?} (want \"HMND\")", &fixed[..4])));
        }
        let hdr = u16_at(&fixed, 4) as usize;
        let ndim = u16_at(&fixed, 6) as usize;
        if ndim > 32 {
            return Err(bad(format!("ndim {ndim} is more than 32")));
        }
        if hdr % 64 != 0 || hdr < FIXED + 16 * ndim || hdr > src.len() {
            return Err(bad(format!("header size {hdr} is not a multiple of 64 in [{}, {}]", FIXED + 16 * ndim, src.len())));
        }
        let raw_dt = &fixed[8..24];
        let end = raw_dt.iter().position(|&c| c == 0).unwrap_or(16);
        if raw_dt[end..].iter().any(|&c| c != 0) || !raw_dt[..end].iter().all(|c| c.is_ascii_graphic()) {
            return Err(bad(format!("dtype {raw_dt:?} is not a NUL-padded ASCII type string")));
        }
        let dtype = String::from_utf8_lossy(&raw_dt[..end]).into_owned();
        let itemsize = itemsize_of(&dtype)?;
        let (data_off, data_len) = (u64_at(&fixed, 24), u64_at(&fixed, 32));
        if data_off != hdr as u64 {
            return Err(bad(format!("data offset {data_off} is not the header size {hdr}")));
        }
        if data_len > (src.len() - hdr) as u64 {
            return Err(bad(format!("{data_len} data bytes do not fit the {} bytes after the header", src.len() - hdr)));
        }
        let dims = src[FIXED..FIXED + 16 * ndim].to_vec();
        let mut shape = Vec::with_capacity(ndim);
        let mut strides = Vec::with_capacity(ndim);
        let (mut lo, mut hi) = (0i128, 0i128); // byte offsets of the lowest/highest element from [0,...]
        let mut empty = false;
        let mut count: i128 = 1;
        for i in 0..ndim {
            let n = u64_at(&dims, 8 * i) as i64;
            let s = u64_at(&dims, 8 * (ndim + i)) as i64;
            if n < 0 {
                return Err(bad(format!("dimension {i} has negative size {n}")));
            }
            shape.push(n);
            strides.push(s);
            if n == 0 {
                empty = true;
                continue;
            }
            count *= n as i128;
            if count > 1 << 62 {
                return Err(bad(format!("shape {shape:?} overflows")));
            }
            let step = s as i128 * (n as i128 - 1); // i128: no overflow for i64 operands
            if step >= 0 {
                hi += step;
            } else {
                lo += step;
            }
        }
        let mut base = 0usize;
        if !empty {
            let reach = hi - lo + itemsize as i128;
            if reach > data_len as i128 {
                return Err(bad(format!(
                    "shape {shape:?} with strides {strides:?} and itemsize {itemsize} reaches {reach} bytes, the data has {data_len}"
                )));
            }
            base = (-lo) as usize;
        }
        Ok(NdArray { dtype, shape, strides, itemsize, data: &src[hdr..hdr + data_len as usize], base })
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().map(|&d| d as usize).product()
    }
    /// True when the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Row-major with no gaps (what Python always sends).
    pub fn is_c_contiguous(&self) -> bool {
        let mut want = self.itemsize as i64;
        for i in (0..self.shape.len()).rev() {
            if self.shape[i] == 0 {
                return true;
            }
            if self.shape[i] != 1 && self.strides[i] != want {
                return false;
            }
            want *= self.shape[i];
        }
        true
    }
    /// The data region, in place (read it with `strides`).
    pub fn data(&self) -> &'a [u8] {
        self.data
    }
    /// The elements of a C-contiguous array whose dtype is T (little-endian, or order-less for one
    /// byte) as `&[T]` over the payload, in row-major order.
    pub fn values<T: Primitive>(&self) -> Result<&'a [T]> {
        let order = self.dtype.as_bytes()[0];
        let one_byte = T::NUMPY.ends_with('1');
        if self.dtype[1..] != *T::NUMPY || !(order == b'<' || order == b'=' || (order == b'|' && one_byte)) {
            return Err(bad(format!(
                "the array's dtype is {:?}; {} needs \"<{}\"",
                self.dtype,
                std::any::type_name::<T>(),
                T::NUMPY
            )));
        }
        if !self.is_c_contiguous() {
            return Err(Error::new(
                Code::FailedPrecondition,
                format!("the array (shape {:?}, strides {:?}) is not C-contiguous: read data() with its strides", self.shape, self.strides),
            ));
        }
        let n = self.len();
        if n == 0 {
            return Ok(&[]);
        }
        let bytes = &self.data[self.base..self.base + n * self.itemsize];
        cast_slice::<T>(bytes).ok_or_else(|| bad(format!("the data is not {}-byte aligned", self.itemsize)))
    }
}

/// A C-contiguous float64 numpy payload in place: its values and shape.
pub fn ndarray_f64(src: &[u8]) -> Result<(&[f64], Vec<i64>)> {
    let a = NdArray::decode(src)?;
    let v = a.values::<f64>()?;
    Ok((v, a.shape))
}
