//! A token bucket: the hub's limit on new streams per second.

use std::{sync::Mutex, time::Instant};

pub struct RateLimit {
    /// (rate per second, tokens, last refill)
    state: Mutex<(f64, f64, Instant)>,
}

impl RateLimit {
    /// Allows `per_second` on average, in bursts of up to one second's worth.
    pub fn new(per_second: u32) -> Self {
        let per_second = f64::from(per_second.max(1));
        RateLimit {
            state: Mutex::new((per_second, per_second, Instant::now())),
        }
    }

    pub fn per_second(&self) -> f64 {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).0
    }

    /// A new rate from now on (a reload); the tokens saved up stay within the new burst.
    pub fn set_per_second(&self, per_second: u32) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.0 = f64::from(per_second.max(1));
        state.1 = state.1.min(state.0);
    }

    /// Takes one token if there is one.
    pub fn try_acquire(&self) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (per_second, tokens, last) = &mut *state;
        let now = Instant::now();
        *tokens =
            (*tokens + now.duration_since(*last).as_secs_f64() * *per_second).min(*per_second);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_a_burst_then_refuses() {
        let limit = RateLimit::new(5);
        assert!((0..5).all(|_| limit.try_acquire()));
        assert!(!limit.try_acquire());
    }
}
