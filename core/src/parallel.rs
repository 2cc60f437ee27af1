//! Work spread over the cores: independent per-item steps (one socket, one fd) of a dump that
//! meets thousands of them.

/// `f` over every item, on up to one thread per core with at least `min_per_thread` items
/// each (fewer items run here, on this thread); the results in the items' order. `None` if
/// a thread panicked.
pub(crate) fn map_on_cores<T: Sync, R: Send>(
    items: &[T],
    min_per_thread: usize,
    f: impl Fn(&T) -> R + Sync,
) -> Option<Vec<R>> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(items.len() / min_per_thread.max(1))
        .max(1);
    if threads == 1 {
        return Some(items.iter().map(f).collect());
    }
    let per_thread = items.len().div_ceil(threads);
    let f = &f;
    std::thread::scope(|scope| {
        let workers: Vec<_> = items
            .chunks(per_thread)
            .map(|chunk| scope.spawn(move || chunk.iter().map(f).collect::<Vec<R>>()))
            .collect();
        let mut out = Vec::with_capacity(items.len());
        for worker in workers {
            out.extend(worker.join().ok()?);
        }
        Some(out)
    })
}
