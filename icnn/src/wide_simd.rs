//! Host kernels compiled for AVX2 and FMA where the CPU has them.
//!
//! The workspace builds for the x86-64 baseline (SSE2), so rustc vectorises the host kernels'
//! element-wise loops with 128-bit registers: 4 f32 or 2 f64 lanes, and no fused
//! multiply-adds. [`avx2_fma_fn!`] defines a function whose body runs as a copy compiled
//! with the `avx2` and `fma` target features when the running CPU has both
//! ([`has_avx2_fma`], checked once and cached by the standard library), and through the
//! baseline build elsewhere. The kernel stays safe, portable code, the same either way; only
//! its code generation differs (a loop the compiler vectorises may sum in another order,
//! within the kernels' documented tolerances).
//!
//! What the body calls in its hot loops must be `#[inline(always)]` too: code called out of
//! line is compiled once, for the baseline.

/// Whether the running CPU has AVX2 and FMA (always `false` off x86-64).
#[inline]
pub(crate) fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `avx2_fma_fn! { fn name<T: Bound>(arg: Type, ...) { body } }` (optionally without the
/// generic parameter, with a visibility and doc comments; the function returns `()`) defines
/// `name`, whose body runs as an `#[inline(always)]` kernel compiled for AVX2 + FMA when
/// [`has_avx2_fma`], and as built otherwise (see the module docs).
macro_rules! avx2_fma_fn {
    ($(#[$meta:meta])* $vis:vis fn $name:ident $(<$t:ident: $bound:path>)? ($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$meta])*
        $vis fn $name $(<$t: $bound>)? ($($arg: $ty),*) {
            #[inline(always)]
            fn kernel $(<$t: $bound>)? ($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                fn wide $(<$t: $bound>)? ($($arg: $ty),*) {
                    kernel($($arg),*)
                }
                if $crate::wide_simd::has_avx2_fma() {
                    // SAFETY: the CPU has AVX2 and FMA (checked just above), the target
                    // features `wide` is compiled with.
                    return unsafe { wide($($arg),*) };
                }
            }
            kernel($($arg),*)
        }
    };
}
pub(crate) use avx2_fma_fn;

#[cfg(test)]
mod tests {
    avx2_fma_fn! {
        fn scale<T: crate::surrogate_host::Real>(xs: &mut [T], a: T) {
            for x in xs.iter_mut() {
                *x *= a;
            }
        }
    }

    avx2_fma_fn! {
        fn shift_f64(xs: &mut [f64], a: f64) {
            for x in xs.iter_mut() {
                *x += a;
            }
        }
    }

    #[test]
    fn the_wrapper_computes_the_kernel() {
        let mut xs: Vec<f32> = (0..37).map(|i| i as f32).collect();
        scale(&mut xs, 2.0);
        for (i, x) in xs.iter().enumerate() {
            assert_eq!(*x, 2.0 * i as f32);
        }
        // The form without a type parameter.
        let mut ys: Vec<f64> = (0..37).map(f64::from).collect();
        shift_f64(&mut ys, 0.5);
        for (i, y) in ys.iter().enumerate() {
            assert_eq!(*y, i as f64 + 0.5);
        }
    }
}
