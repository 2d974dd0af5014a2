//! The check digits that tell a real identifier from a number of the same shape: what lets a
//! pattern claim precision without a language model. Each function takes the candidate as
//! matched (separators included) and answers whether its digits check.

/// The ASCII digits of `s`, in order, ignoring everything else (spaces, dashes).
fn digits(s: &str) -> Vec<u32> {
    s.chars().filter_map(|c| c.to_digit(10)).collect()
}

/// Luhn (payment cards, Canadian social insurance numbers).
pub fn luhn(s: &str) -> bool {
    let d = digits(s);
    if d.len() < 2 {
        return false;
    }
    let sum: u32 = d
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &x)| {
            if i % 2 == 1 {
                let y = x * 2;
                if y > 9 {
                    y - 9
                } else {
                    y
                }
            } else {
                x
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// ISO 13616 IBAN: the country code and check digits moved to the end, letters as 10..35,
/// the whole number mod 97 is 1. Lengths per country are not checked beyond 15..34.
pub fn iban(s: &str) -> bool {
    let compact: Vec<char> = s.chars().filter(|c| !c.is_whitespace()).collect();
    if !(15..=34).contains(&compact.len()) {
        return false;
    }
    let (head, tail) = compact.split_at(4);
    if !head[..2].iter().all(char::is_ascii_uppercase)
        || !head[2..].iter().all(char::is_ascii_digit)
    {
        return false;
    }
    let mut remainder: u32 = 0;
    for c in tail.iter().chain(head) {
        let value = match c {
            '0'..='9' => *c as u32 - '0' as u32,
            'A'..='Z' => *c as u32 - 'A' as u32 + 10,
            _ => return false,
        };
        // Two-digit values shift by 100, one-digit by 10.
        let shift = if value >= 10 { 100 } else { 10 };
        remainder = (remainder * shift + value) % 97;
    }
    remainder == 1
}

/// ABA routing number: weights 3, 7, 1 over nine digits, sum mod 10 is 0.
pub fn aba_routing(s: &str) -> bool {
    let d = digits(s);
    if d.len() != 9 || d.iter().all(|&x| x == 0) {
        return false;
    }
    let weights = [3, 7, 1, 3, 7, 1, 3, 7, 1];
    d.iter()
        .zip(weights)
        .map(|(x, w)| x * w)
        .sum::<u32>()
        .is_multiple_of(10)
}

/// NHS number: weights 10..2 over the first nine digits; 11 minus the sum mod 11 is the
/// tenth digit (11 means 0; 10 is never valid).
pub fn nhs(s: &str) -> bool {
    let d = digits(s);
    if d.len() != 10 {
        return false;
    }
    let sum: u32 = d[..9]
        .iter()
        .enumerate()
        .map(|(i, &x)| x * (10 - i as u32))
        .sum();
    let check = match 11 - sum % 11 {
        11 => 0,
        10 => return false,
        c => c,
    };
    check == d[9]
}

/// North American VIN (ISO 3779 with the check digit in position 9): 17 characters, no I,
/// O or Q, transliterated and weighted, sum mod 11 (10 written `X`).
pub fn vin(s: &str) -> bool {
    let chars: Vec<char> = s.chars().collect();
    if chars.len() != 17 {
        return false;
    }
    let weights = [8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2];
    let mut sum = 0;
    for (c, w) in chars.iter().zip(weights) {
        let value = match c {
            '0'..='9' => *c as u32 - '0' as u32,
            'A' | 'J' => 1,
            'B' | 'K' | 'S' => 2,
            'C' | 'L' | 'T' => 3,
            'D' | 'M' | 'U' => 4,
            'E' | 'N' | 'V' => 5,
            'F' | 'W' => 6,
            'G' | 'P' | 'X' => 7,
            'H' | 'Y' => 8,
            'R' | 'Z' => 9,
            _ => return false, // I, O, Q and anything else
        };
        sum += value * w;
    }
    let check = match sum % 11 {
        10 => 'X',
        n => char::from_digit(n, 10).unwrap_or('?'),
    };
    chars[8] == check
}

/// US social security number: the rules the SSA never breaks (area not 000, 666 or 9xx,
/// group not 00, serial not 0000).
pub fn us_ssn(s: &str) -> bool {
    let d = digits(s);
    if d.len() != 9 {
        return false;
    }
    let area = d[0] * 100 + d[1] * 10 + d[2];
    let group = d[3] * 10 + d[4];
    let serial = d[5] * 1000 + d[6] * 100 + d[7] * 10 + d[8];
    area != 0 && area != 666 && area < 900 && group != 0 && serial != 0
}

/// US ITIN: nine digits starting with 9, the fourth and fifth in 50-65, 70-88, 90-92 or
/// 94-99 (the IRS's ranges).
pub fn us_itin(s: &str) -> bool {
    let d = digits(s);
    if d.len() != 9 || d[0] != 9 {
        return false;
    }
    let middle = d[3] * 10 + d[4];
    matches!(middle, 50..=65 | 70..=88 | 90..=92 | 94..=99)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn_accepts_test_cards_and_refuses_one_digit_off() {
        for good in [
            "4111 1111 1111 1111",
            "5500-0000-0000-0004",
            "340000000000009",
            "046 454 286",
        ] {
            assert!(luhn(good), "{good}");
        }
        for bad in ["4111 1111 1111 1112", "1234 5678 9012 3456", "7"] {
            assert!(!luhn(bad), "{bad}");
        }
    }

    #[test]
    fn iban_mod_97() {
        for good in [
            "GB82 WEST 1234 5698 7654 32",
            "DE89370400440532013000",
            "FR1420041010050500013M02606",
        ] {
            assert!(iban(good), "{good}");
        }
        for bad in [
            "GB82 WEST 1234 5698 7654 33",
            "DE89370400440532013001",
            "XX00",
            "gb82west12345698765432",
        ] {
            assert!(!iban(bad), "{bad}");
        }
    }

    #[test]
    fn routing_nhs_vin() {
        assert!(aba_routing("011000015"));
        assert!(aba_routing("021000021"));
        assert!(!aba_routing("021000022"));
        assert!(!aba_routing("000000000"));
        assert!(nhs("943 476 5919"));
        assert!(!nhs("943 476 5918"));
        assert!(vin("1M8GDM9AXKP042788"));
        assert!(vin("11111111111111111"));
        assert!(!vin("1M8GDM9A1KP042788"));
        assert!(!vin("1M8GDM9AXKP04278O"));
    }

    #[test]
    fn ssn_and_itin_ranges() {
        assert!(us_ssn("536-22-1234"));
        for bad in [
            "000-12-3456",
            "666-12-3456",
            "912-12-3456",
            "536-00-1234",
            "536-22-0000",
        ] {
            assert!(!us_ssn(bad), "{bad}");
        }
        assert!(us_itin("912-70-1234"));
        assert!(!us_itin("912-69-1234"));
        assert!(!us_itin("812-70-1234"));
    }
}
