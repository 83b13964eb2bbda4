//! The write buffer of a stream connection.

use std::io::IoSlice;

/// Capacity a drained buffer may keep for reuse; more is released so that a connection that
/// once buffered a burst does not hold the memory while idle.
const KEEP_CAPACITY: usize = 64 * 1024;

/// Bytes waiting to be written, consumed from the front.
///
/// A `Vec` with a read offset: appends are amortised O(1), consuming is O(1), and the consumed
/// prefix is compacted away only when it is more than half the buffer. An empty buffer with
/// no capacity holds no heap memory.
#[derive(Default)]
pub struct WriteBuffer {
    buf: Vec<u8>,
    head: usize,
}

impl WriteBuffer {
    /// An empty buffer (no allocation).
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes waiting.
    pub fn len(&self) -> usize {
        self.buf.len() - self.head
    }

    /// `true` when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The waiting bytes.
    pub fn front(&self) -> &[u8] {
        &self.buf[self.head..]
    }

    /// Appends bytes.
    pub fn push(&mut self, data: &[u8]) {
        if self.head > 0 && self.head >= self.buf.len() / 2 {
            self.buf.drain(..self.head);
            self.head = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// Appends what is left of `bufs` after the first `skip` bytes were written.
    pub fn push_vectored(&mut self, bufs: &[IoSlice<'_>], mut skip: usize) {
        for b in bufs {
            if skip >= b.len() {
                skip -= b.len();
                continue;
            }
            self.push(&b[skip..]);
            skip = 0;
        }
    }

    /// Drops `n` written bytes from the front.
    pub fn consume(&mut self, n: usize) {
        self.head += n;
        debug_assert!(self.head <= self.buf.len());
        if self.head >= self.buf.len() {
            self.clear();
        }
    }

    /// Drops everything (and releases a large allocation).
    pub fn clear(&mut self) {
        self.head = 0;
        if self.buf.capacity() > KEEP_CAPACITY {
            self.buf = Vec::new();
        } else {
            self.buf.clear();
        }
    }

    /// Releases all memory.
    pub fn release(&mut self) {
        self.head = 0;
        self.buf = Vec::new();
    }
}

impl std::fmt::Debug for WriteBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never dump buffer contents.
        f.debug_struct("WriteBuffer")
            .field("len", &self.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_consume_compacts() {
        let mut b = WriteBuffer::new();
        b.push(b"hello ");
        b.push(b"world");
        b.consume(6);
        assert_eq!(b.front(), b"world");
        b.push(b"!");
        assert_eq!(b.front(), b"world!");
        b.consume(6);
        assert!(b.is_empty());
        assert_eq!(b.front(), b"");
    }

    #[test]
    fn vectored_skip() {
        let mut b = WriteBuffer::new();
        b.push_vectored(
            &[
                IoSlice::new(b"abc"),
                IoSlice::new(b"def"),
                IoSlice::new(b"gh"),
            ],
            4,
        );
        assert_eq!(b.front(), b"efgh");
    }

    #[test]
    fn large_capacity_released_when_drained() {
        let mut b = WriteBuffer::new();
        b.push(&vec![0u8; 1 << 20]);
        b.consume(1 << 20);
        assert_eq!(b.buf.capacity(), 0);
    }
}
