//! Sensitive-information detection without a language model: for each PII type Bedrock names
//! that a pattern can find soundly, a pattern, a validator where the identifier carries one
//! (check digits, ranges) and, where the shape alone says too little, a context word that
//! must come shortly before it ("routing number", "NHS"). Types that need a model to find
//! (names, addresses, passwords) are refused by [`PiiType::detector`] returning `None`, so
//! a guardrail never claims a protection it cannot give.
//!
//! Every pattern is compiled by the `regex` crate: linear time in the text, whatever the
//! input.

pub mod checksums;

use std::sync::OnceLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

/// Bedrock's `GuardrailPiiEntityType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PiiType {
    Address,
    Age,
    AwsAccessKey,
    AwsSecretKey,
    CaHealthNumber,
    CaSocialInsuranceNumber,
    CreditDebitCardCvv,
    CreditDebitCardExpiry,
    CreditDebitCardNumber,
    DriverId,
    Email,
    InternationalBankAccountNumber,
    IpAddress,
    LicensePlate,
    MacAddress,
    Name,
    Password,
    Phone,
    Pin,
    SwiftCode,
    UkNationalHealthServiceNumber,
    UkNationalInsuranceNumber,
    UkUniqueTaxpayerReferenceNumber,
    Url,
    Username,
    UsBankAccountNumber,
    UsBankRoutingNumber,
    UsIndividualTaxIdentificationNumber,
    UsPassportNumber,
    UsSocialSecurityNumber,
    VehicleIdentificationNumber,
}

impl PiiType {
    /// The name in Bedrock's enum (and in `{NAME}` masks).
    pub fn name(self) -> &'static str {
        match self {
            PiiType::Address => "ADDRESS",
            PiiType::Age => "AGE",
            PiiType::AwsAccessKey => "AWS_ACCESS_KEY",
            PiiType::AwsSecretKey => "AWS_SECRET_KEY",
            PiiType::CaHealthNumber => "CA_HEALTH_NUMBER",
            PiiType::CaSocialInsuranceNumber => "CA_SOCIAL_INSURANCE_NUMBER",
            PiiType::CreditDebitCardCvv => "CREDIT_DEBIT_CARD_CVV",
            PiiType::CreditDebitCardExpiry => "CREDIT_DEBIT_CARD_EXPIRY",
            PiiType::CreditDebitCardNumber => "CREDIT_DEBIT_CARD_NUMBER",
            PiiType::DriverId => "DRIVER_ID",
            PiiType::Email => "EMAIL",
            PiiType::InternationalBankAccountNumber => "INTERNATIONAL_BANK_ACCOUNT_NUMBER",
            PiiType::IpAddress => "IP_ADDRESS",
            PiiType::LicensePlate => "LICENSE_PLATE",
            PiiType::MacAddress => "MAC_ADDRESS",
            PiiType::Name => "NAME",
            PiiType::Password => "PASSWORD",
            PiiType::Phone => "PHONE",
            PiiType::Pin => "PIN",
            PiiType::SwiftCode => "SWIFT_CODE",
            PiiType::UkNationalHealthServiceNumber => "UK_NATIONAL_HEALTH_SERVICE_NUMBER",
            PiiType::UkNationalInsuranceNumber => "UK_NATIONAL_INSURANCE_NUMBER",
            PiiType::UkUniqueTaxpayerReferenceNumber => "UK_UNIQUE_TAXPAYER_REFERENCE_NUMBER",
            PiiType::Url => "URL",
            PiiType::Username => "USERNAME",
            PiiType::UsBankAccountNumber => "US_BANK_ACCOUNT_NUMBER",
            PiiType::UsBankRoutingNumber => "US_BANK_ROUTING_NUMBER",
            PiiType::UsIndividualTaxIdentificationNumber => {
                "US_INDIVIDUAL_TAX_IDENTIFICATION_NUMBER"
            }
            PiiType::UsPassportNumber => "US_PASSPORT_NUMBER",
            PiiType::UsSocialSecurityNumber => "US_SOCIAL_SECURITY_NUMBER",
            PiiType::VehicleIdentificationNumber => "VEHICLE_IDENTIFICATION_NUMBER",
        }
    }

    /// This type's detector, or `None` for a type that needs a language model to find.
    pub fn detector(self) -> Option<&'static Detector> {
        detectors().iter().find(|d| d.kind == self)
    }
}

/// One PII occurrence: its type and its byte range in the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    pub kind: PiiType,
    pub start: usize,
    pub end: usize,
}

/// How one type is found: candidates from `pattern` (capture group 1 if the pattern has
/// one, else the whole match), kept if `valid` accepts them and, when `context` is set, if
/// it matches within `CONTEXT_WINDOW` bytes before the candidate.
pub struct Detector {
    pub kind: PiiType,
    pattern: Regex,
    valid: fn(&str) -> bool,
    context: Option<Regex>,
}

/// How far before a candidate its context word may be.
const CONTEXT_WINDOW: usize = 48;

impl Detector {
    /// Every occurrence in `text`.
    pub fn find(&self, text: &str, out: &mut Vec<Found>) {
        for caps in self.pattern.captures_iter(text) {
            let Some(m) = caps.get(1).or_else(|| caps.get(0)) else {
                continue;
            };
            let (start, end) = trim_trailing_punctuation(text, m.start(), m.end());
            let candidate = &text[start..end];
            if !(self.valid)(candidate) {
                continue;
            }
            if let Some(context) = &self.context {
                let mut from = start.saturating_sub(CONTEXT_WINDOW);
                while !text.is_char_boundary(from) {
                    from += 1;
                }
                if !context.is_match(&text[from..start]) {
                    continue;
                }
            }
            out.push(Found {
                kind: self.kind,
                start,
                end,
            });
        }
    }
}

/// URLs and e-mail addresses at the end of a sentence do not own its full stop.
fn trim_trailing_punctuation(text: &str, start: usize, mut end: usize) -> (usize, usize) {
    while end > start {
        match text[..end].chars().next_back() {
            Some('.' | ',' | ';' | ':' | '!' | '?' | ')' | ']' | '\'' | '"') => end -= 1,
            _ => break,
        }
    }
    (start, end)
}

/// Every PII occurrence of the given types in `text`, in order, overlaps resolved: where two
/// candidates overlap, the one that starts first wins, then the longer.
pub fn find_all(text: &str, types: &[PiiType]) -> Vec<Found> {
    let mut found = Vec::new();
    for kind in types {
        if let Some(detector) = kind.detector() {
            detector.find(text, &mut found);
        }
    }
    found.sort_by_key(|f| (f.start, std::cmp::Reverse(f.end)));
    let mut kept: Vec<Found> = Vec::with_capacity(found.len());
    for f in found {
        if kept.last().is_none_or(|last| f.start >= last.end) {
            kept.push(f);
        }
    }
    kept
}

fn any(_: &str) -> bool {
    true
}

fn ip_address(s: &str) -> bool {
    s.parse::<std::net::IpAddr>().is_ok()
}

fn card_number(s: &str) -> bool {
    let digits: String = s.chars().filter(char::is_ascii_digit).collect();
    let issuer = |prefixes: &[&str]| prefixes.iter().any(|p| digits.starts_with(p));
    let known_issuer = issuer(&["4", "34", "37", "36", "38", "6011", "65", "35"])
        || (51..=55).any(|p| digits.starts_with(&p.to_string()))
        || (2221..=2720).any(|p| digits.starts_with(&p.to_string()));
    (13..=19).contains(&digits.len()) && known_issuer && checksums::luhn(&digits)
}

fn vin(s: &str) -> bool {
    s.bytes().any(|b| b.is_ascii_digit())
        && s.bytes().any(|b| b.is_ascii_alphabetic())
        && checksums::vin(s)
}

fn uk_nino(s: &str) -> bool {
    let prefix: String = s.chars().take(2).collect();
    !matches!(
        prefix.as_str(),
        "BG" | "GB" | "NK" | "KN" | "TN" | "NT" | "ZZ"
    )
}

fn phone(s: &str) -> bool {
    let digits = s.chars().filter(char::is_ascii_digit).count();
    (7..=15).contains(&digits)
}

/// ISO 3166 country codes a BIC's fifth and sixth letters must be.
const COUNTRIES: &str = "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI \
BJ BL BM BN BO BQ BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ \
DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ \
GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN \
KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS \
MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT \
PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF \
TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS XK YE YT ZA \
ZM ZW";

fn swift(s: &str) -> bool {
    s.get(4..6)
        .is_some_and(|country| COUNTRIES.split(' ').any(|c| c == country))
}

fn detector(
    kind: PiiType,
    pattern: &str,
    valid: fn(&str) -> bool,
    context: Option<&str>,
) -> Option<Detector> {
    Some(Detector {
        kind,
        pattern: Regex::new(pattern).ok()?,
        valid,
        context: match context {
            Some(c) => Some(Regex::new(c).ok()?),
            None => None,
        },
    })
}

/// The detectors, compiled once. A pattern that failed to compile (none does; the tests
/// compile every one) would leave its type undetectable rather than panic.
fn detectors() -> &'static [Detector] {
    static DETECTORS: OnceLock<Vec<Detector>> = OnceLock::new();
    DETECTORS.get_or_init(|| {
        use PiiType::*;
        [
            detector(
                Email,
                r"(?i)\b[a-z0-9._%+-]+@[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,24}\b",
                any,
                None,
            ),
            detector(Url, r#"(?i)\b(?:https?://|www\.)[^\s<>"']+"#, any, None),
            detector(
                IpAddress,
                r"\b(?:\d{1,3}\.){3}\d{1,3}\b|(?i:\b[0-9a-f]{0,4}(?::[0-9a-f]{0,4}){2,7}\b)",
                ip_address,
                None,
            ),
            detector(
                MacAddress,
                r"(?i)\b[0-9a-f]{2}(?::[0-9a-f]{2}){5}\b|\b[0-9a-f]{2}(?:-[0-9a-f]{2}){5}\b",
                any,
                None,
            ),
            detector(
                CreditDebitCardNumber,
                r"\b\d(?:[ -]?\d){12,18}\b",
                card_number,
                None,
            ),
            detector(
                CreditDebitCardCvv,
                r"(?i)\b(?:cvv2?|cvc2?|csc|card security code|security code)\W{0,4}(\d{3,4})\b",
                any,
                None,
            ),
            detector(
                CreditDebitCardExpiry,
                r"(?i)\b(?:exp(?:iry|iration)?(?: date)?|valid (?:thru|through|until)|expires)\W{0,4}((?:0[1-9]|1[0-2]) ?/ ?(?:20)?\d{2})\b",
                any,
                None,
            ),
            detector(
                InternationalBankAccountNumber,
                r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b",
                checksums::iban,
                None,
            ),
            detector(
                SwiftCode,
                r"\b[A-Z]{6}[A-Z0-9]{2}(?:[A-Z0-9]{3})?\b",
                swift,
                Some(r"(?i)\b(?:swift|bic)\b"),
            ),
            detector(
                UsSocialSecurityNumber,
                r"\b\d{3}-\d{2}-\d{4}\b|(?i:\b(?:ssn|social security(?: number| no\.?)?)\W{0,4}(\d{9})\b)",
                checksums::us_ssn,
                None,
            ),
            detector(
                UsIndividualTaxIdentificationNumber,
                r"\b9\d{2}[- ]?\d{2}[- ]?\d{4}\b",
                checksums::us_itin,
                Some(r"(?i)\b(?:itin|taxpayer|tax id|tin)\b"),
            ),
            detector(
                UsBankRoutingNumber,
                r"\b\d{9}\b",
                checksums::aba_routing,
                Some(r"(?i)\b(?:routing|aba|rtn|transit)\b"),
            ),
            detector(
                UsPassportNumber,
                r"\b[A-Z]?\d{8,9}\b",
                any,
                Some(r"(?i)\bpassport\b"),
            ),
            detector(
                UkNationalInsuranceNumber,
                r"\b[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b",
                uk_nino,
                None,
            ),
            detector(
                UkNationalHealthServiceNumber,
                r"\b\d{3}[ -]?\d{3}[ -]?\d{4}\b",
                checksums::nhs,
                Some(r"(?i)\bnhs\b"),
            ),
            detector(
                CaSocialInsuranceNumber,
                r"\b\d{3}[ -]?\d{3}[ -]?\d{3}\b",
                checksums::luhn,
                Some(r"(?i)\b(?:sin|social insurance)\b"),
            ),
            detector(
                VehicleIdentificationNumber,
                r"\b[A-HJ-NPR-Z0-9]{17}\b",
                vin,
                None,
            ),
            detector(
                AwsAccessKey,
                r"\b(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}\b",
                any,
                None,
            ),
            detector(
                AwsSecretKey,
                r"(?i:aws_?secret_?access_?key|secret_?access_?key|aws secret(?: access)? key)\W{0,6}([A-Za-z0-9/+=]{40})(?:[^A-Za-z0-9/+=]|$)",
                any,
                None,
            ),
            detector(
                Phone,
                // International (+CC ...), a parenthesised area code, or North American
                // 3-3-4 with dashes or dots: digit groups split by spaces alone are too
                // often cards, accounts or NHS numbers to call a phone.
                r"\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}(?:[ .-]\d{2,4}){1,3}\b|\(\d{3}\)[ .-]?\d{3}[ .-]\d{4}\b|\b\d{3}[.-]\d{3}[.-]\d{4}\b",
                phone,
                None,
            ),
        ]
        .into_iter()
        .flatten()
        .collect()
    })
}

/// The types [`PiiType::detector`] can find.
pub fn detectable() -> Vec<PiiType> {
    detectors().iter().map(|d| d.kind).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<(PiiType, &str)> {
        find_all(text, &detectable())
            .into_iter()
            .map(|f| (f.kind, &text[f.start..f.end]))
            .collect()
    }

    #[test]
    fn every_detector_compiles() {
        assert_eq!(detectable().len(), 20);
        assert!(PiiType::Name.detector().is_none());
    }

    #[test]
    fn finds_each_type_in_context() {
        use PiiType::*;
        let cases: &[(&str, PiiType, &str)] = &[
            (
                "Mail jane.doe@example.co.uk today.",
                Email,
                "jane.doe@example.co.uk",
            ),
            (
                "See https://example.com/a?b=c.",
                Url,
                "https://example.com/a?b=c",
            ),
            (
                "Server at 192.168.10.254 is down",
                IpAddress,
                "192.168.10.254",
            ),
            (
                "v6 2001:db8::ff00:42:8329 works",
                IpAddress,
                "2001:db8::ff00:42:8329",
            ),
            (
                "NIC 00:1A:2B:3C:4D:5E attached",
                MacAddress,
                "00:1A:2B:3C:4D:5E",
            ),
            (
                "card 4111 1111 1111 1111 please",
                CreditDebitCardNumber,
                "4111 1111 1111 1111",
            ),
            ("CVV: 123", CreditDebitCardCvv, "123"),
            ("expiry 09/27 ok", CreditDebitCardExpiry, "09/27"),
            (
                "IBAN GB82 WEST 1234 5698 7654 32.",
                InternationalBankAccountNumber,
                "GB82 WEST 1234 5698 7654 32",
            ),
            ("SWIFT code DEUTDEFF500", SwiftCode, "DEUTDEFF500"),
            ("SSN 536-22-1234", UsSocialSecurityNumber, "536-22-1234"),
            (
                "ITIN 912-70-1234",
                UsIndividualTaxIdentificationNumber,
                "912-70-1234",
            ),
            ("routing number 021000021", UsBankRoutingNumber, "021000021"),
            ("passport no. 912345678", UsPassportNumber, "912345678"),
            (
                "NI number AB 12 34 56 C",
                UkNationalInsuranceNumber,
                "AB 12 34 56 C",
            ),
            (
                "NHS number 943 476 5919",
                UkNationalHealthServiceNumber,
                "943 476 5919",
            ),
            (
                "my SIN is 046 454 286",
                CaSocialInsuranceNumber,
                "046 454 286",
            ),
            (
                "VIN 1M8GDM9AXKP042788 sold",
                VehicleIdentificationNumber,
                "1M8GDM9AXKP042788",
            ),
            (
                "key AKIAIOSFODNN7EXAMPLE",
                AwsAccessKey,
                "AKIAIOSFODNN7EXAMPLE",
            ),
            (
                "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                AwsSecretKey,
                "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            ),
            ("call +1 415-555-0132 now", Phone, "+1 415-555-0132"),
        ];
        for (text, kind, want) in cases {
            let found = kinds(text);
            assert!(found.contains(&(*kind, want)), "{text}: {found:?}");
        }
    }

    #[test]
    fn hard_negatives_are_left_alone() {
        for text in [
            "Order 4111 1111 1111 1112 shipped", // fails Luhn
            "version 1.2.3.4567 released",       // not an IP
            "on 2026-12-07 at 10:30",            // a date and a time
            "routing 021000022",                 // fails ABA
            "NHS number 943 476 5918",           // fails mod 11
            "SSN 666-12-3456",                   // area 666
            "the number 021000021 alone",        // no routing context
            "WONDERFUL things",                  // not a BIC without context
            "IBAN GB82 WEST 1234 5698 7654 33",  // fails mod 97
            "build 1M8GDM9A1KP042788",           // VIN check digit wrong
        ] {
            let found = kinds(text);
            assert!(found.is_empty(), "{text}: {found:?}");
        }
    }

    #[test]
    fn a_card_number_is_not_also_a_phone() {
        let found = kinds("pay with 5500-0000-0000-0004 thanks");
        assert_eq!(
            found,
            [(PiiType::CreditDebitCardNumber, "5500-0000-0000-0004")]
        );
    }
}
