//! A small worker pool: `--jobs N` items at a time, no new item once the run is interrupted.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::interrupt;

/// Applies `f` to every item with at most `jobs` threads. The result has one slot per item, in
/// order; `None` for the items skipped because of an interruption.
pub fn map<T, R, F>(items: &[T], jobs: usize, f: F) -> Vec<Option<R>>
where
    T: Sync,
    R: Send,
    F: Fn(&T) -> R + Sync,
{
    let results: Vec<Mutex<Option<R>>> = items.iter().map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    let workers = jobs.clamp(1, items.len().max(1));
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    if interrupt::requested() {
                        break;
                    }
                    let index = next.fetch_add(1, Ordering::SeqCst);
                    let Some(item) = items.get(index) else {
                        break;
                    };
                    let result = f(item);
                    if let Ok(mut slot) = results[index].lock() {
                        *slot = Some(result);
                    }
                }
            });
        }
    });
    results
        .into_iter()
        .map(|slot| slot.into_inner().ok().flatten())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_keep_the_order_of_the_items() {
        let items: Vec<u32> = (0..50).collect();
        let out = map(&items, 4, |i| i * 2);
        assert_eq!(out, items.iter().map(|i| Some(i * 2)).collect::<Vec<_>>());
    }

    #[test]
    fn no_items_is_fine() {
        let out: Vec<Option<u32>> = map(&[] as &[u32], 3, |i| *i);
        assert!(out.is_empty());
    }
}
