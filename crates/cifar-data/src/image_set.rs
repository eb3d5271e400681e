//! [`ImageSet`]: a compact in-memory store of labelled 32x32 RGB images.

use crate::{DataError, IMAGE_BYTES, NUM_CLASSES};

/// A set of labelled images: `u8` pixels, [`IMAGE_BYTES`] per image in CHW order (the red
/// plane, then green, then blue, each 32 rows of 32 pixels), and one `u8` label per image.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ImageSet {
    images: Vec<u8>,
    labels: Vec<u8>,
}

impl ImageSet {
    /// Wraps pixel and label buffers. `images.len()` must be `labels.len() * IMAGE_BYTES` and
    /// every label must be below [`NUM_CLASSES`].
    pub fn new(images: Vec<u8>, labels: Vec<u8>) -> Result<Self, DataError> {
        if images.len() != labels.len() * IMAGE_BYTES {
            return Err(DataError::InvalidImageSet {
                reason: format!(
                    "{} pixel bytes for {} labels, expected {} ({} per image)",
                    images.len(),
                    labels.len(),
                    labels.len() * IMAGE_BYTES,
                    IMAGE_BYTES
                ),
            });
        }
        if let Some((i, &l)) = labels
            .iter()
            .enumerate()
            .find(|(_, &l)| usize::from(l) >= NUM_CLASSES)
        {
            return Err(DataError::InvalidImageSet {
                reason: format!("label {l} of image {i} is not below {NUM_CLASSES}"),
            });
        }
        Ok(Self { images, labels })
    }

    /// Wraps buffers already known to be consistent (crate-internal fast path).
    pub(crate) fn from_validated(images: Vec<u8>, labels: Vec<u8>) -> Self {
        debug_assert_eq!(images.len(), labels.len() * IMAGE_BYTES);
        Self { images, labels }
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the set holds no image.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The [`IMAGE_BYTES`] pixels of image `i` (CHW). Panics if `i >= self.len()`.
    pub fn image(&self, i: usize) -> &[u8] {
        &self.images[i * IMAGE_BYTES..(i + 1) * IMAGE_BYTES]
    }

    /// The label of image `i`. Panics if `i >= self.len()`.
    pub fn label(&self, i: usize) -> u8 {
        self.labels[i]
    }

    /// All labels, in image order.
    pub fn labels(&self) -> &[u8] {
        &self.labels
    }

    /// All pixels, image after image.
    pub fn images(&self) -> &[u8] {
        &self.images
    }

    /// A new set holding the images at `indices`, in that order (repeats allowed).
    /// Panics if an index is out of range.
    pub fn subset(&self, indices: &[usize]) -> ImageSet {
        let mut images = Vec::with_capacity(indices.len() * IMAGE_BYTES);
        let mut labels = Vec::with_capacity(indices.len());
        for &i in indices {
            images.extend_from_slice(self.image(i));
            labels.push(self.labels[i]);
        }
        ImageSet { images, labels }
    }

    /// The images `range.start..range.end`, copied. Panics if the range is out of bounds.
    pub fn slice(&self, range: std::ops::Range<usize>) -> ImageSet {
        ImageSet {
            images: self.images[range.start * IMAGE_BYTES..range.end * IMAGE_BYTES].to_vec(),
            labels: self.labels[range].to_vec(),
        }
    }

    /// How many images of each class the set holds.
    pub fn class_counts(&self) -> [usize; NUM_CLASSES] {
        let mut counts = [0; NUM_CLASSES];
        for &l in &self.labels {
            counts[usize::from(l)] += 1;
        }
        counts
    }

    /// Concatenates sets, in order.
    pub fn concat(sets: &[ImageSet]) -> ImageSet {
        let n: usize = sets.iter().map(ImageSet::len).sum();
        let mut images = Vec::with_capacity(n * IMAGE_BYTES);
        let mut labels = Vec::with_capacity(n);
        for s in sets {
            images.extend_from_slice(&s.images);
            labels.extend_from_slice(&s.labels);
        }
        ImageSet { images, labels }
    }

    /// Splits into the pixel and label buffers.
    pub fn into_parts(self) -> (Vec<u8>, Vec<u8>) {
        (self.images, self.labels)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_checks_lengths_and_labels() {
        assert!(ImageSet::new(vec![0; IMAGE_BYTES * 2], vec![1, 9]).is_ok());
        let e = ImageSet::new(vec![0; IMAGE_BYTES], vec![1, 2]).unwrap_err();
        assert!(
            e.to_string().contains("3072 pixel bytes for 2 labels"),
            "{e}"
        );
        let e = ImageSet::new(vec![0; IMAGE_BYTES], vec![10]).unwrap_err();
        assert!(e.to_string().contains("label 10 of image 0"), "{e}");
    }

    #[test]
    fn subset_slice_concat() {
        let mut px = vec![0u8; IMAGE_BYTES * 3];
        for i in 0..3 {
            px[i * IMAGE_BYTES] = i as u8;
        }
        let s = ImageSet::new(px, vec![4, 5, 6]).unwrap();
        let sub = s.subset(&[2, 0, 2]);
        assert_eq!(sub.labels(), &[6, 4, 6]);
        assert_eq!(sub.image(0)[0], 2);
        assert_eq!(sub.image(1)[0], 0);
        assert_eq!(s.slice(1..3).labels(), &[5, 6]);
        let c = ImageSet::concat(&[s.slice(0..1), s.slice(1..3)]);
        assert_eq!(c, s);
        assert_eq!(s.class_counts()[5], 1);
    }
}
