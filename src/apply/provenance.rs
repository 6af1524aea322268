//! Where a version's token may be sent: only ever to the current URL of the issuer object
//! that minted it (kind, name, uid), as status recorded it (only the operator writes status),
//! or this pass when it wrote the version. A Secret's word counts only for a version status
//! never recorded an issuer for (an earlier release's, or status lost). Never a URL from a
//! Secret, an annotation or an older spec.

use super::Applier;
use crate::api::{IssuerKind, versioned_secret_name};
use crate::contract::{
    ISSUER_KIND_KEY, ISSUER_NAME_KEY, ISSUER_UID_KEY, ISSUER_URL_KEY, TOKEN_KEY,
};
use crate::issuer::http::IssuerError;
use crate::issuer::resolve::{IssuerIdentity, IssuerProblem, ResolvedIssuer};
use crate::{Error, Result};

/// Where a version was minted.
#[derive(Debug)]
pub(super) enum MintedAt {
    /// Minted locally from the CSPRNG: there is nothing to revoke anywhere.
    Local,
    Platform(ResolvedIssuer),
    /// Minted at a platform that can no longer be asked (its issuer object is gone): said in a
    /// RevokeImpossible Warning, never sent elsewhere.
    Unreachable(String),
    /// No record to tell: its `S-vN` is gone, or holds no token (tokenwarden never wrote it).
    Unrecorded,
    /// Only the issuer named now could tell (a version of an inline issuer, matched by URL),
    /// and it may not be used at the moment: asked again later, nothing decided.
    Undecided(IssuerProblem),
}

/// What an `S-vN` records of the issuer that minted it.
enum Record {
    /// No token-holding `S-vN`: the Secret is gone, or was never ours.
    Missing,
    Local,
    Issuer(IssuerIdentity),
    /// Written before issuers were resources: the inline issuer's URL.
    LegacyUrl(String),
}

impl Applier<'_> {
    /// The issuer this WorkspaceToken mints at now; None: locally. One it may not use is an
    /// error (the plan mints nothing then; this guards every other path).
    pub(super) fn current_issuer(&self) -> Result<Option<&ResolvedIssuer>> {
        match self.issuer {
            None => Ok(None),
            Some(Ok(issuer)) => Ok(Some(issuer)),
            Some(Err(problem)) => Err(problem.clone().into()),
        }
    }

    /// What the `S-vN` of `version` records of its issuer, when that Secret holds a token
    /// (tokenwarden never wrote one without: a token-less one was put there by someone else).
    fn record_of(&self, version: u32) -> Record {
        let name = versioned_secret_name(&self.mounted_name(), version);
        let Some(data) = self.view.objects.get(&name).and_then(|s| s.data.as_ref()) else {
            return Record::Missing;
        };
        if !data.contains_key(TOKEN_KEY) {
            return Record::Missing;
        }
        let text = |key: &str| {
            data.get(key)
                .map(|v| String::from_utf8_lossy(&v.0).into_owned())
        };
        let kind = text(ISSUER_KIND_KEY).and_then(|k| IssuerKind::parse(&k));
        match (kind, text(ISSUER_NAME_KEY), text(ISSUER_UID_KEY)) {
            (Some(kind), Some(name), Some(uid)) => {
                Record::Issuer(IssuerIdentity { kind, name, uid })
            }
            _ => match text(ISSUER_URL_KEY) {
                Some(url) => Record::LegacyUrl(url),
                None => Record::Local,
            },
        }
    }

    /// Where `version` was minted: as this pass wrote it, else as status recorded it, else
    /// (a version status knows no issuer of) as far as a token-holding `S-vN` tells.
    pub(super) fn minted_at(&self, version: u32) -> MintedAt {
        if let Some(facts) = self.journal.token(version) {
            return match &facts.issuer {
                None => MintedAt::Local,
                Some(identity) => self.minted_by(identity),
            };
        }
        let recorded = self
            .plan
            .versions
            .get(&version)
            .and_then(|r| r.issuer.as_ref());
        if let Some(identity) = recorded {
            return self.minted_by(identity);
        }
        match self.record_of(version) {
            Record::Missing => MintedAt::Unrecorded,
            Record::Local => MintedAt::Local,
            Record::Issuer(identity) => self.minted_by(&identity),
            // Adopted only by an issuer object that has that very URL now: the URL is matched,
            // never taken from the Secret.
            Record::LegacyUrl(url) => match self.issuer {
                Some(Ok(issuer)) if same_url(&issuer.http.url, &url) => {
                    MintedAt::Platform(issuer.clone())
                }
                Some(Err(problem)) => MintedAt::Undecided(problem.clone()),
                _ => MintedAt::Unreachable(
                    "it was minted by an inline spec.issuer, and no issuer this token may use \
                     has that URL now"
                        .into(),
                ),
            },
        }
    }

    /// The object `identity` names, if it is still that one.
    fn minted_by(&self, identity: &IssuerIdentity) -> MintedAt {
        match self.io.issuers.minted_by(identity, &self.ns) {
            Some(issuer) => MintedAt::Platform(issuer),
            None => MintedAt::Unreachable(format!(
                "{identity} (uid {}), which minted it, is gone",
                identity.uid
            )),
        }
    }

    /// The issuer to call about `version` (verify it): where it was minted.
    pub(super) fn issuer_to_ask(&self, version: u32) -> Result<ResolvedIssuer> {
        match self.minted_at(version) {
            MintedAt::Platform(issuer) => Ok(issuer),
            MintedAt::Unreachable(why) => Err(Error::Issuer(IssuerError::Unusable { reason: why })),
            MintedAt::Undecided(problem) => Err(problem.into()),
            MintedAt::Local | MintedAt::Unrecorded => Err(Error::Issuer(IssuerError::Unusable {
                reason: format!("version {version} has no record of an issuer to ask"),
            })),
        }
    }

    /// Whether `version` was minted by the same issuer object as `issuer`.
    pub(super) fn same_issuer(&self, version: u32, issuer: &ResolvedIssuer) -> bool {
        matches!(self.minted_at(version), MintedAt::Platform(i) if i.identity == issuer.identity)
    }
}

/// `https://p.example/` and `https://p.example` are one URL.
fn same_url(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}
