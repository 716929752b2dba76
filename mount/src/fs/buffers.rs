//! Read buffers, used again by the FUSE thread that answered with them.
//!
//! The mount keeps big buffers mmapped (see `session::bound_allocator`), so a
//! fresh buffer for each read of up to a MiB costs more than the read's
//! copy: a mapping, a page fault per 4 KiB as it is filled, and an unmapping
//! that interrupts the other CPUs to flush their TLBs. Each thread keeps the
//! buffer of its last answer instead, at most [`KEEP_MAX`] bytes of it.

use std::cell::RefCell;

/// The largest buffer a thread keeps: one read as big as the kernel sends.
const KEEP_MAX: usize = super::MAX_IO as usize;

thread_local! {
    static SPARE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// A buffer of `len` bytes for the caller to overwrite whole: its bytes are
/// whatever the thread's last buffer held (zeros where it was shorter).
pub fn take(len: usize) -> Vec<u8> {
    let mut buf = SPARE.with(|s| std::mem::take(&mut *s.borrow_mut()));
    // Shrinks without touching the bytes; grows with zeros (once per size).
    buf.resize(len, 0);
    buf
}

/// Keeps `buf` for this thread's next [`take`], unless it is bigger than
/// one read.
pub fn give_back(buf: Vec<u8>) {
    if buf.capacity() <= KEEP_MAX {
        SPARE.with(|s| *s.borrow_mut() = buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_given_back_is_taken_again_by_its_thread_at_any_length_up_to_one_read() {
        let mut first = take(4096);
        assert_eq!(first.len(), 4096);
        first.fill(7);
        let at = first.as_ptr();
        give_back(first);
        let shorter = take(100);
        assert_eq!((shorter.len(), shorter.as_ptr()), (100, at), "the same memory, shortened");
        give_back(shorter);
        let longer = take(8192);
        assert_eq!(longer.len(), 8192);
        assert!(longer[4096..].iter().all(|&b| b == 0), "grown with zeros");
        give_back(longer);
        give_back(vec![0; KEEP_MAX + 1]);
        assert!(take(0).capacity() >= 8192, "a buffer over one read is not kept");
        std::thread::spawn(|| assert!(take(10).capacity() < 8192, "other threads have their own")).join().unwrap();
    }
}
