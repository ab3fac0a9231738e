// X.509 certificates made from Bunker site identities, for the TLS channel between sites
// (spec/TRANSFER.md, "Certificates").
//
// A site never presents a certificate that anyone else issued, and trusts no CA. Instead:
//  - the *site certificate* is a leaf that the site signs with its own Ed25519 identity key and
//    whose public key is that same key;
//  - each pinned peer is trusted through a *peer anchor*: a CA certificate that the verifying
//    site builds locally from nothing but the peer's public identity (its public key, and name
//    constraints that confine it to the peer's own names).
// A peer's leaf therefore verifies against our anchors iff it was signed by the Ed25519 key we
// pinned for it and names that same identity. The anchor's own signature carries no meaning
// (OpenSSL does not check trust anchors' self-signatures unless asked to); it is made with a
// throwaway key only because X.509 has no unsigned certificates.
#ifndef BUNKER_TRANSFER_TLS_IDENTITY_H_
#define BUNKER_TRANSFER_TLS_IDENTITY_H_

#include <kj/compat/tls.h>

#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "crypto/keys.h"

namespace bunker::transfer {

// The DNS name a site's certificate carries in its subjectAltName and the name a client
// expects when it dials that site: the fingerprint with ':' replaced by '-', e.g.
// "bk1-abcdefghijklmnopqrstuvwxyz". One DNS label (30 characters of [a-z2-7-]).
std::string SiteHostname(const crypto::Fingerprint& fingerprint);

// Validity of a site certificate (spec/TRANSFER.md). A year: the certificate only carries the pinned key (a peer is revoked by removing its key
// from `peers`, not by expiry), and a daemon must outlive any shorter validity without a
// restart. The certificate is made anew at every start.
inline constexpr absl::Duration kSiteCertificateValidity = absl::Hours(24 * 365);
// How far before `now` a certificate's notBefore is set, to tolerate clock skew between sites.
inline constexpr absl::Duration kClockSkewAllowance = absl::Minutes(5);

// The site certificate of `identity` as one PEM "CERTIFICATE" block:
//   version 3, random 128-bit serial,
//   issuer  "CN=<fingerprint>, OU=bunker site key"   (the name of the peer anchor),
//   subject "CN=<fingerprint>",
//   notBefore now - kClockSkewAllowance, notAfter now + validity,
//   public key = the identity's Ed25519 key, signed by the same key (Ed25519, no digest),
//   basicConstraints critical CA:FALSE; keyUsage critical digitalSignature;
//   extendedKeyUsage serverAuth, clientAuth; subjectAltName DNS:SiteHostname().
// Issuer and subject differ on purpose: a self-issued leaf would have to match a trust anchor
// byte for byte. kInvalidArgument if validity is not positive; kInternal if OpenSSL fails.
absl::StatusOr<std::string> MakeSiteCertificatePem(const crypto::Identity& identity,
                                                   absl::Time now, absl::Duration validity);

// The Ed25519 private key of `identity` and its site certificate, for kj-tls. The key
// material passes only through guarded memory and wiped OpenSSL buffers.
absl::StatusOr<kj::TlsKeypair> MakeSiteKeypair(const crypto::Identity& identity, absl::Time now,
                                               absl::Duration validity = kSiteCertificateValidity);

// The trust anchor for one pinned peer, as one PEM "CERTIFICATE" block:
//   subject = issuer = "CN=<peer fingerprint>, OU=bunker site key",
//   public key = peer.sign_key, notBefore now - 1 day, notAfter now + 100 years,
//   basicConstraints critical CA:TRUE, pathlen:0; keyUsage critical keyCertSign;
//   nameConstraints critical, permitted: dirName "CN=<peer fingerprint>" and
//   DNS SiteHostname(peer), so that the peer's key vouches only for the peer's own names;
//   signed by a fresh throwaway Ed25519 key (see the file comment).
// kInternal if OpenSSL fails.
absl::StatusOr<std::string> MakePeerAnchorPem(const crypto::PublicIdentity& peer, absl::Time now);

}  // namespace bunker::transfer

#endif  // BUNKER_TRANSFER_TLS_IDENTITY_H_
