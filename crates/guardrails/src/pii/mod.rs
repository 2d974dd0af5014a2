//! Sensitive-information detection without a language model: for each PII type Bedrock names
//! that a pattern can find soundly, one or more patterns, a validator where the identifier
//! carries one (check digits, ranges) and, where the shape alone says too little, a context
//! word that must come shortly before or after it ("routing number", "NHS", "mobile").
//! Types that need a model to find (names, addresses, passwords) have no detector
//! ([`PiiType::is_detectable`] is false), so a guardrail never claims a protection it cannot
//! give.
//!
//! Where findings overlap, the one that starts first wins, then the longer; on one span, a
//! phone number (a shape many identifiers share) loses to anything else, and the nearest
//! label wins ("passport number 918626966, ITIN ..." is a passport number).
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

    /// Whether the guard model finds this type: the types a pattern cannot find soundly and
    /// a language model can (a person's name, a postal address).
    pub fn needs_model(self) -> bool {
        matches!(self, PiiType::Name | PiiType::Address)
    }

    /// Whether a pattern can find this type (the others need a language model).
    pub fn is_detectable(self) -> bool {
        detectors().iter().any(|d| d.kind == self)
    }
}

/// One PII occurrence: its type and its byte range in the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    pub kind: PiiType,
    pub start: usize,
    pub end: usize,
    /// Found by a fallback detector: on one span, anything else wins.
    fallback: bool,
    /// How far its context word is (bytes; one after the candidate counts as farther than
    /// any before it), `UNLABELLED` for a detector that needs none: on one span, the
    /// nearest label wins.
    label_distance: usize,
    /// The finding detector's place in the list, which settles what is left.
    priority: usize,
}

const UNLABELLED: usize = usize::MAX;

/// How one type is found: candidates from `pattern` (capture group 1 if the pattern has
/// one, else the whole match), kept if `valid` accepts them and, when `context` is set, if
/// it matches within `CONTEXT_BEFORE` bytes before the candidate or `CONTEXT_AFTER`
/// bytes after it.
pub struct Detector {
    pub kind: PiiType,
    pattern: Regex,
    valid: fn(&str) -> bool,
    context: Option<Regex>,
    /// A label that, right before a candidate, says it is something else ("NHS number
    /// 802-485-1166" is not a phone, valid NHS number or not).
    not_after: Option<Regex>,
    /// A shape many identifiers share (a phone's digit groups): it loses every tie.
    fallback: bool,
}

/// How far before a candidate its context word may be ("my NHS number is ...").
const CONTEXT_BEFORE: usize = 48;
/// How far after it ("... is my routing number").
const CONTEXT_AFTER: usize = 32;

impl Detector {
    /// Every occurrence in `text`, tagged with `priority`.
    fn find(&self, text: &str, priority: usize, out: &mut Vec<Found>) {
        for caps in self.pattern.captures_iter(text) {
            let Some(m) = caps.get(1).or_else(|| caps.get(0)) else {
                continue;
            };
            let (start, end) = trim_trailing_punctuation(text, m.start(), m.end());
            let candidate = &text[start..end];
            if !(self.valid)(candidate) {
                continue;
            }
            let before = &text[word_start(text, start.saturating_sub(CONTEXT_BEFORE))..start];
            if self.not_after.as_ref().is_some_and(|r| r.is_match(before)) {
                continue;
            }
            let label_distance = match &self.context {
                None => UNLABELLED,
                Some(context) => {
                    let after = &text[end..word_end(text, end + CONTEXT_AFTER)];
                    let nearest_before = context.find_iter(before).last();
                    match (nearest_before, context.find(after)) {
                        (Some(b), _) => before.len() - b.end(),
                        (None, Some(a)) => CONTEXT_BEFORE + a.start(),
                        (None, None) => continue,
                    }
                }
            };
            out.push(Found {
                kind: self.kind,
                start,
                end,
                fallback: self.fallback,
                label_distance,
                priority,
            });
        }
    }
}

/// `at`, moved forward past a word it cuts ("micro|phone" must not read as "phone").
fn word_start(text: &str, at: usize) -> usize {
    let mut at = floor_boundary(text, at);
    if at == 0 {
        return 0;
    }
    let cuts_word = |at: usize| {
        text[..at]
            .chars()
            .next_back()
            .is_some_and(char::is_alphanumeric)
            && text[at..].chars().next().is_some_and(char::is_alphanumeric)
    };
    while at < text.len() && cuts_word(at) {
        at = floor_boundary(text, at + 1);
    }
    at
}

/// `at` (clamped to the text), moved forward to the end of a word it cuts ("tel|ephone"
/// must not read as "tel").
fn word_end(text: &str, at: usize) -> usize {
    let mut at = ceil_boundary(text, at);
    while let Some(c) = text[at..].chars().next() {
        if !c.is_alphanumeric() {
            break;
        }
        at += c.len_utf8();
    }
    at
}

/// `at`, moved forward to a character boundary.
fn floor_boundary(text: &str, mut at: usize) -> usize {
    while !text.is_char_boundary(at) {
        at += 1;
    }
    at
}

/// `at` (clamped to the text), moved back to a character boundary.
fn ceil_boundary(text: &str, at: usize) -> usize {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
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
/// candidates overlap, the one that starts first wins, then the longer, then one not found
/// by a fallback detector (phones), then the one whose label is nearer (a labelled one over
/// an unlabelled one), then the one whose detector is listed first.
pub fn find_all(text: &str, types: &[PiiType]) -> Vec<Found> {
    let mut found = Vec::new();
    for (priority, detector) in detectors().iter().enumerate() {
        if types.contains(&detector.kind) {
            detector.find(text, priority, &mut found);
        }
    }
    found.sort_by_key(|f| {
        (
            f.start,
            std::cmp::Reverse(f.end),
            f.fallback,
            f.label_distance,
            f.priority,
        )
    });
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
    let known_issuer = issuer(&["4", "34", "37", "30", "36", "38", "6011", "65", "35"])
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

/// A licence plate or a driver's licence number: letters and digits (a digit among them),
/// their separators aside, `min` to `max` of them.
fn registration(s: &str, min: usize, max: usize) -> bool {
    let alnum = s.chars().filter(|c| c.is_alphanumeric()).count();
    (min..=max).contains(&alnum) && s.bytes().any(|b| b.is_ascii_digit())
}

/// A plate has a letter too: digit groups alone near the word "plate" are more often a
/// phone or a reference than a plate.
fn license_plate(s: &str) -> bool {
    registration(s, 4, 10) && s.chars().any(char::is_alphabetic)
}

fn driver_id(s: &str) -> bool {
    registration(s, 5, 20)
}

fn phone(s: &str) -> bool {
    let number = s.split(['x', 'e']).next().unwrap_or(s);
    let digits = number.chars().filter(char::is_ascii_digit).count();
    (7..=15).contains(&digits) && !s.split_whitespace().any(looks_like_date)
}

/// `12-07-2026`, `2026.12.07`: digit groups a phone pattern would otherwise take.
fn looks_like_date(s: &str) -> bool {
    let groups: Vec<&str> = s.split(['-', '.', '/']).collect();
    groups.len() == 3
        && groups.iter().all(|g| g.bytes().all(|b| b.is_ascii_digit()))
        && (groups[0].len() == 4 || groups[2].len() == 4)
        && groups.iter().filter(|g| g.len() <= 2).count() == 2
}

/// Forty characters of base64 with more than letters in them: AWS secret keys are random.
fn aws_secret(s: &str) -> bool {
    s.bytes().any(|b| !b.is_ascii_alphabetic())
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
        not_after: None,
        fallback: false,
    })
}

/// A phone detector: a number labelled as another identifier is not taken for a phone.
fn phone_detector(pattern: &str, context: Option<&str>) -> Option<Detector> {
    let not_after = Regex::new(
        r"(?i)\b(?:nhs|ssn|sin|itin|tin|routing|aba|account|acct|order|invoice|iban|passport|tracking|ref|reference|isbn|sku|serial|card)(?:\s+(?:number|no\.?|num|#|is|was))*[\s:#.=-]{0,4}$",
    )
    .ok()?;
    Some(Detector {
        not_after: Some(not_after),
        fallback: true,
        ..detector(PiiType::Phone, pattern, phone, context)?
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
                r"(?i)\b(?:cvv2?|cvc2?|csc|card security code|security code)\b[^\d\n]{0,20}?\b(\d{3,4})\b",
                any,
                None,
            ),
            detector(
                CreditDebitCardExpiry,
                r"(?i)\b(?:exp(?:iry|iration)?(?: date)?|valid (?:thru|through|until)|expires|expiring)\b[^\d\n]{0,20}?\b((?:0[1-9]|1[0-2]) ?/ ?(?:20)?\d{2})\b",
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
                DriverId,
                r"\b[A-Z0-9]{5,20}\b",
                driver_id,
                Some(r"(?i)\b(?:driver'?s?|driving) licen[cs]e\b|\bDLN?\b|\blicen[cs]e (?:number|no\b)"),
            ),
            detector(
                LicensePlate,
                r"\b[\p{Lu}0-9]{1,8}(?:[ -][\p{Lu}0-9]{1,6}){0,2}\b",
                license_plate,
                Some(
                    r"(?i)\b(?:licen[cs]e|number|registration|vehicle|car) plates?\b|\bplate (?:number|no\b)|\b(?:vehicle|car) registration\b|\breg\.? (?:number|no\b)",
                ),
            ),
            detector(
                AwsAccessKey,
                r"\b(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}\b",
                any,
                None,
            ),
            detector(
                AwsSecretKey,
                r"(?i:\b(?:aws[ _-]?)?secret[ _-]?(?:access[ _-]?)?key)[^\n]{0,24}?[^A-Za-z0-9/+]([A-Za-z0-9/+]{40})(?:[^A-Za-z0-9/+]|$)",
                aws_secret,
                None,
            ),
            phone_detector(
                // International (+CC ...), a parenthesised area code, or North American
                // 3-3-4 with dashes or dots, each with an optional extension.
                r"(?:\+\d[\d \t().-]{5,20}\d|\(\d{3}\) ?\d{3}[ .-]\d{4}|\b\d{3}[.-]\d{3}[.-]\d{4})(?: ?(?:x|ext\.?) ?\d{1,5})?\b",
                None,
            ),
            phone_detector(
                // National formats (0161 496 0631, 06 12 34 56 78) look like any other run
                // of digits: a word that says phone must be near.
                r"(?:\(\d{1,5}\)[ .-]?)?\b\d[\d \t().-]{5,18}\d(?: ?(?:x|ext\.?) ?\d{1,5})?\b",
                Some(
                    r"(?i)\b(?:phone|tel|telephone|mobile|cell|cellphone|call|contact|ph|fax|text|reach|ring|dial|whatsapp|sms|landline|hotline|telefon|handy|t[ée]l[ée]fono|m[óo]vil|t[ée]l[ée]phone|portable|cellulare)\b",
                ),
            ),
        ]
        .into_iter()
        .flatten()
        .collect()
    })
}

/// The types a pattern can find.
pub fn detectable() -> Vec<PiiType> {
    let mut kinds: Vec<PiiType> = detectors().iter().map(|d| d.kind).collect();
    kinds.dedup();
    kinds
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
        assert_eq!(detectable().len(), 22);
        assert!(!PiiType::Name.is_detectable());
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
            ("driver's license D1234567 expired", DriverId, "D1234567"),
            (
                "licence plate: SZ17 YCI, blue car",
                LicensePlate,
                "SZ17 YCI",
            ),
            ("ABG-R-418 is the number plate", LicensePlate, "ABG-R-418"),
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
    fn context_may_follow_and_words_may_sit_between_label_and_value() {
        use PiiType::*;
        let cases: &[(&str, PiiType, &str)] = &[
            (
                "021000021 is my routing number",
                UsBankRoutingNumber,
                "021000021",
            ),
            (
                "Can you confirm 0161 496 0631 is the right mobile?",
                Phone,
                "0161 496 0631",
            ),
            ("Tel. 086-804 60 94", Phone, "086-804 60 94"),
            ("ph: +918621770234", Phone, "+918621770234"),
            ("contact +49(0)4151 021633.", Phone, "+49(0)4151 021633"),
            ("Reach us at 902-868-5995x2890.", Phone, "902-868-5995x2890"),
            ("ph: +1-988-287-1803x34018", Phone, "+1-988-287-1803x34018"),
            (
                "account updated mobile=0117 496 0025 ok",
                Phone,
                "0117 496 0025",
            ),
            ("the customer's CVV2 is 239", CreditDebitCardCvv, "239"),
            (
                "update the security code on file to 8739",
                CreditDebitCardCvv,
                "8739",
            ),
            (
                "my expiration date is 06/2031",
                CreditDebitCardExpiry,
                "06/2031",
            ),
            (
                "the AWS secret key is QM+Ho/qPJ9X+YOikxwlP5JWxyPjTSv7ZTDKO+Pq2.",
                AwsSecretKey,
                "QM+Ho/qPJ9X+YOikxwlP5JWxyPjTSv7ZTDKO+Pq2",
            ),
            (
                "export AWS_SECRET_ACCESS_KEY=zFGpDaW1kgw8++xqwqDzDIaA/ZpPC/8ZXnTkk5u7",
                AwsSecretKey,
                "zFGpDaW1kgw8++xqwqDzDIaA/ZpPC/8ZXnTkk5u7",
            ),
            (
                r#"{"secret access key": "vfvC+ldJfLrUArSuyZhZC4nmlolJZjE6I6Wat3y1"}"#,
                AwsSecretKey,
                "vfvC+ldJfLrUArSuyZhZC4nmlolJZjE6I6Wat3y1",
            ),
            (
                "Diners 30443184799365 ok",
                CreditDebitCardNumber,
                "30443184799365",
            ),
        ];
        for (text, kind, want) in cases {
            let found = kinds(text);
            assert!(found.contains(&(*kind, want)), "{text}: {found:?}");
        }
    }

    #[test]
    fn a_validated_identifier_wins_over_the_phone_its_shape_resembles() {
        assert_eq!(
            kinds("My NHS no is 811-802-5446."),
            [(PiiType::UkNationalHealthServiceNumber, "811-802-5446")]
        );
        // Labelled as an NHS number, failing its check: neither an NHS number nor a phone.
        assert!(kinds("NHS number 802-485-1166 failed the check.").is_empty());
        // A date near a phone word is still a date, and "tel" cut from "telephone" is no
        // phone word.
        assert!(kinds("call me on 12-07-2026").is_empty());
        assert!(kinds("[2026-11-30 10:22:41] INFO account updated telephone=1").is_empty());
        // A passport number labelled before it is not the ITIN labelled after it.
        assert_eq!(
            kinds("passport number 918626966, ITIN 997-70-6597"),
            [
                (PiiType::UsPassportNumber, "918626966"),
                (PiiType::UsIndividualTaxIdentificationNumber, "997-70-6597")
            ]
        );
        // A phone word near an SSN or an IP address does not make it a phone.
        assert_eq!(
            kinds("the customer's SSN is 646-99-5162 and they want a call back"),
            [(PiiType::UsSocialSecurityNumber, "646-99-5162")]
        );
        assert_eq!(
            kinds("the client IP is 180.120.147.149, call back"),
            [(PiiType::IpAddress, "180.120.147.149")]
        );
        // National digit runs need a phone word near them.
        assert!(kinds("Order 0161 496 0631 shipped").is_empty());
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
