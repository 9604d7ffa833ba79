//! G.711 μ-law and A-law (ITU-T G.711), sample by sample.

const BIAS: i32 = 0x84;
const CLIP: i32 = 32635;

/// Encode one 16-bit linear sample to μ-law.
pub fn linear_to_ulaw(sample: i16) -> u8 {
    let mut s = sample as i32;
    let sign = if s < 0 {
        s = -s;
        0x80
    } else {
        0
    };
    s = s.min(CLIP) + BIAS;
    let exponent = (31 - (s as u32).leading_zeros() as i32 - 7).clamp(0, 7);
    let mantissa = (s >> (exponent + 3)) & 0x0F;
    !(sign | (exponent << 4) | mantissa) as u8
}

/// Decode one μ-law byte to 16-bit linear.
pub fn ulaw_to_linear(byte: u8) -> i16 {
    let b = !byte as i32;
    let sign = b & 0x80;
    let exponent = (b >> 4) & 0x07;
    let mantissa = b & 0x0F;
    let magnitude = (((mantissa << 3) + BIAS) << exponent) - BIAS;
    (if sign != 0 { -magnitude } else { magnitude }) as i16
}

/// Encode one 16-bit linear sample to A-law.
pub fn linear_to_alaw(sample: i16) -> u8 {
    let mut s = (sample as i32) >> 3;
    let sign = if s >= 0 {
        0x80
    } else {
        s = -s - 1;
        0
    };
    let s = s.min(0xFFF);
    let byte = if s < 32 {
        (s >> 1) as u8
    } else {
        let exponent = 31 - (s as u32).leading_zeros() - 4;
        ((exponent << 4) as u8) | (((s >> exponent) & 0x0F) as u8)
    };
    (byte | sign) ^ 0x55
}

/// Decode one A-law byte to 16-bit linear.
pub fn alaw_to_linear(byte: u8) -> i16 {
    let b = (byte ^ 0x55) as i32;
    let sign = b & 0x80;
    let exponent = (b >> 4) & 0x07;
    let mantissa = b & 0x0F;
    let magnitude = if exponent == 0 {
        (mantissa << 4) + 8
    } else {
        ((mantissa << 4) + 0x108) << (exponent - 1)
    };
    (if sign != 0 { magnitude } else { -magnitude }) as i16
}

/// μ-law silence.
pub const ULAW_SILENCE: u8 = 0xFF;
/// A-law silence.
pub const ALAW_SILENCE: u8 = 0xD5;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_error_is_within_one_segment_step() {
        for s in (-32768i32..32768).step_by(7) {
            let s = s as i16;
            let u = ulaw_to_linear(linear_to_ulaw(s)) as i32;
            let a = alaw_to_linear(linear_to_alaw(s)) as i32;
            let tol = ((s as i32).abs() / 16).max(16);
            assert!((u - s as i32).abs() <= tol, "ulaw {s} -> {u}");
            assert!((a - s as i32).abs() <= tol, "alaw {s} -> {a}");
        }
        assert_eq!(ulaw_to_linear(ULAW_SILENCE), 0);
        assert!(alaw_to_linear(ALAW_SILENCE).abs() <= 8);
        // Every code decodes and re-encodes to itself (except -0 in μ-law).
        for b in 0..=255u8 {
            assert_eq!(linear_to_alaw(alaw_to_linear(b)), b);
            if b != 0x7F {
                assert_eq!(linear_to_ulaw(ulaw_to_linear(b)), b, "ulaw code {b:#x}");
            }
        }
    }
}
