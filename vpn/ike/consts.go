package ike

import "fmt"

// IANA "Internet Key Exchange Version 2 (IKEv2) Parameters" numbers used by this package.

// ExchangeType is the IKEv2 exchange type (RFC 7296 §3.1).
type ExchangeType uint8

// Exchange types.
const (
	ExchangeIKESAInit     ExchangeType = 34
	ExchangeIKEAuth       ExchangeType = 35
	ExchangeCreateChildSA ExchangeType = 36
	ExchangeInformational ExchangeType = 37
)

func (e ExchangeType) String() string {
	switch e {
	case ExchangeIKESAInit:
		return "IKE_SA_INIT"
	case ExchangeIKEAuth:
		return "IKE_AUTH"
	case ExchangeCreateChildSA:
		return "CREATE_CHILD_SA"
	case ExchangeInformational:
		return "INFORMATIONAL"
	}
	return fmt.Sprintf("EXCHANGE(%d)", uint8(e))
}

// PayloadType is the "Next Payload" value (RFC 7296 §3.2).
type PayloadType uint8

// Payload types.
const (
	PayloadNone    PayloadType = 0
	PayloadSA      PayloadType = 33
	PayloadKE      PayloadType = 34
	PayloadIDi     PayloadType = 35
	PayloadIDr     PayloadType = 36
	PayloadCERT    PayloadType = 37
	PayloadCERTREQ PayloadType = 38
	PayloadAUTH    PayloadType = 39
	PayloadNonce   PayloadType = 40
	PayloadNotify  PayloadType = 41
	PayloadDelete  PayloadType = 42
	PayloadVendor  PayloadType = 43
	PayloadTSi     PayloadType = 44
	PayloadTSr     PayloadType = 45
	PayloadSK      PayloadType = 46
	PayloadCP      PayloadType = 47
	PayloadEAP     PayloadType = 48
	PayloadSKF     PayloadType = 53 // RFC 7383
)

var payloadNames = map[PayloadType]string{
	PayloadSA: "SA", PayloadKE: "KE", PayloadIDi: "IDi", PayloadIDr: "IDr", PayloadCERT: "CERT",
	PayloadCERTREQ: "CERTREQ", PayloadAUTH: "AUTH", PayloadNonce: "No", PayloadNotify: "N",
	PayloadDelete: "D", PayloadVendor: "V", PayloadTSi: "TSi", PayloadTSr: "TSr", PayloadSK: "SK",
	PayloadCP: "CP", PayloadEAP: "EAP", PayloadSKF: "SKF",
}

func (p PayloadType) String() string {
	if s, ok := payloadNames[p]; ok {
		return s
	}
	return fmt.Sprintf("PAYLOAD(%d)", uint8(p))
}

// ProtocolID names the protocol of a proposal, notify or delete (RFC 7296 §3.3.1).
type ProtocolID uint8

// Protocol IDs.
const (
	ProtoNone ProtocolID = 0
	ProtoIKE  ProtocolID = 1
	ProtoAH   ProtocolID = 2
	ProtoESP  ProtocolID = 3
)

func (p ProtocolID) String() string {
	switch p {
	case ProtoIKE:
		return "IKE"
	case ProtoAH:
		return "AH"
	case ProtoESP:
		return "ESP"
	}
	return fmt.Sprintf("PROTO(%d)", uint8(p))
}

// TransformType is a transform's type (RFC 7296 §3.3.2).
type TransformType uint8

// Transform types.
const (
	TransformENCR  TransformType = 1
	TransformPRF   TransformType = 2
	TransformINTEG TransformType = 3
	TransformDH    TransformType = 4
	TransformESN   TransformType = 5
)

func (t TransformType) String() string {
	switch t {
	case TransformENCR:
		return "ENCR"
	case TransformPRF:
		return "PRF"
	case TransformINTEG:
		return "INTEG"
	case TransformDH:
		return "DH"
	case TransformESN:
		return "ESN"
	}
	return fmt.Sprintf("TRANSFORM(%d)", uint8(t))
}

// Encryption algorithm transform IDs (IANA "Transform Type 1").
const (
	EncrAESCBC   uint16 = 12
	EncrAESCTR   uint16 = 13
	EncrAESGCM8  uint16 = 18
	EncrAESGCM12 uint16 = 19
	EncrAESGCM16 uint16 = 20
)

// Pseudorandom function transform IDs (IANA "Transform Type 2").
const (
	PRFHMACSHA1    uint16 = 2
	PRFHMACSHA2256 uint16 = 5
	PRFHMACSHA2384 uint16 = 6
	PRFHMACSHA2512 uint16 = 7
)

// Integrity algorithm transform IDs (IANA "Transform Type 3").
const (
	IntegNone           uint16 = 0
	IntegHMACSHA196     uint16 = 2
	IntegHMACSHA2256128 uint16 = 12
	IntegHMACSHA2384192 uint16 = 13
	IntegHMACSHA2512256 uint16 = 14
)

// Diffie-Hellman group transform IDs (IANA "Transform Type 4").
const (
	DHNone         uint16 = 0
	DHModp1024     uint16 = 2
	DHModp1536     uint16 = 5
	DHModp2048     uint16 = 14
	DHModp3072     uint16 = 15
	DHModp4096     uint16 = 16
	DHModp6144     uint16 = 17
	DHModp8192     uint16 = 18
	DHECP256       uint16 = 19
	DHECP384       uint16 = 20
	DHECP521       uint16 = 21
	DHModp1024s160 uint16 = 22
	DHModp2048s224 uint16 = 23
	DHModp2048s256 uint16 = 24
	DHCurve25519   uint16 = 31
)

// Extended sequence number transform IDs (IANA "Transform Type 5").
const (
	ESNNo  uint16 = 0
	ESNYes uint16 = 1
)

// attrKeyLength is the Key Length transform attribute (TV format, RFC 7296 §3.3.5).
const attrKeyLength = 14

// NotifyType is a Notify message type (RFC 7296 §3.10.1). Types below 16384 are errors.
type NotifyType uint16

// Notify message types used here.
const (
	NotifyUnsupportedCriticalPayload NotifyType = 1
	NotifyInvalidIKESPI              NotifyType = 4
	NotifyInvalidMajorVersion        NotifyType = 5
	NotifyInvalidSyntax              NotifyType = 7
	NotifyInvalidMessageID           NotifyType = 9
	NotifyInvalidSPI                 NotifyType = 11
	NotifyNoProposalChosen           NotifyType = 14
	NotifyInvalidKEPayload           NotifyType = 17
	NotifyAuthenticationFailed       NotifyType = 24
	NotifySinglePairRequired         NotifyType = 34
	NotifyNoAdditionalSAs            NotifyType = 35
	NotifyInternalAddressFailure     NotifyType = 36
	NotifyFailedCPRequired           NotifyType = 37
	NotifyTSUnacceptable             NotifyType = 38
	NotifyInvalidSelectors           NotifyType = 39
	NotifyTemporaryFailure           NotifyType = 43
	NotifyChildSANotFound            NotifyType = 44

	NotifyInitialContact            NotifyType = 16384
	NotifySetWindowSize             NotifyType = 16385
	NotifyAdditionalTSPossible      NotifyType = 16386
	NotifyIPCompSupported           NotifyType = 16387
	NotifyNATDetectionSourceIP      NotifyType = 16388
	NotifyNATDetectionDestinationIP NotifyType = 16389
	NotifyCookie                    NotifyType = 16390
	NotifyUseTransportMode          NotifyType = 16391
	NotifyRekeySA                   NotifyType = 16393
	NotifyESPTFCPaddingNotSupported NotifyType = 16394
	NotifyNonFirstFragmentsAlso     NotifyType = 16395
	NotifyMobikeSupported           NotifyType = 16396
	NotifyMultipleAuthSupported     NotifyType = 16404
	NotifyRedirectSupported         NotifyType = 16406
	NotifyIKEv2FragmentationSupport NotifyType = 16430
	NotifySignatureHashAlgorithms   NotifyType = 16431
)

var notifyNames = map[NotifyType]string{
	NotifyUnsupportedCriticalPayload: "UNSUPPORTED_CRITICAL_PAYLOAD",
	NotifyInvalidIKESPI:              "INVALID_IKE_SPI",
	NotifyInvalidMajorVersion:        "INVALID_MAJOR_VERSION",
	NotifyInvalidSyntax:              "INVALID_SYNTAX",
	NotifyInvalidMessageID:           "INVALID_MESSAGE_ID",
	NotifyInvalidSPI:                 "INVALID_SPI",
	NotifyNoProposalChosen:           "NO_PROPOSAL_CHOSEN",
	NotifyInvalidKEPayload:           "INVALID_KE_PAYLOAD",
	NotifyAuthenticationFailed:       "AUTHENTICATION_FAILED",
	NotifySinglePairRequired:         "SINGLE_PAIR_REQUIRED",
	NotifyNoAdditionalSAs:            "NO_ADDITIONAL_SAS",
	NotifyInternalAddressFailure:     "INTERNAL_ADDRESS_FAILURE",
	NotifyFailedCPRequired:           "FAILED_CP_REQUIRED",
	NotifyTSUnacceptable:             "TS_UNACCEPTABLE",
	NotifyInvalidSelectors:           "INVALID_SELECTORS",
	NotifyTemporaryFailure:           "TEMPORARY_FAILURE",
	NotifyChildSANotFound:            "CHILD_SA_NOT_FOUND",
	NotifyInitialContact:             "INITIAL_CONTACT",
	NotifySetWindowSize:              "SET_WINDOW_SIZE",
	NotifyAdditionalTSPossible:       "ADDITIONAL_TS_POSSIBLE",
	NotifyIPCompSupported:            "IPCOMP_SUPPORTED",
	NotifyNATDetectionSourceIP:       "NAT_DETECTION_SOURCE_IP",
	NotifyNATDetectionDestinationIP:  "NAT_DETECTION_DESTINATION_IP",
	NotifyCookie:                     "COOKIE",
	NotifyUseTransportMode:           "USE_TRANSPORT_MODE",
	NotifyRekeySA:                    "REKEY_SA",
	NotifyESPTFCPaddingNotSupported:  "ESP_TFC_PADDING_NOT_SUPPORTED",
	NotifyNonFirstFragmentsAlso:      "NON_FIRST_FRAGMENTS_ALSO",
	NotifyMobikeSupported:            "MOBIKE_SUPPORTED",
	NotifyMultipleAuthSupported:      "MULTIPLE_AUTH_SUPPORTED",
	NotifyRedirectSupported:          "REDIRECT_SUPPORTED",
	NotifyIKEv2FragmentationSupport:  "IKEV2_FRAGMENTATION_SUPPORTED",
	NotifySignatureHashAlgorithms:    "SIGNATURE_HASH_ALGORITHMS",
}

func (n NotifyType) String() string {
	if s, ok := notifyNames[n]; ok {
		return s
	}
	return fmt.Sprintf("NOTIFY(%d)", uint16(n))
}

// IsError reports whether n is an error notification (RFC 7296 §3.10.1: 0..16383).
func (n NotifyType) IsError() bool { return n < 16384 }

// IDType is an identification type (RFC 7296 §3.5).
type IDType uint8

// Identification types.
const (
	IDIPv4Addr   IDType = 1
	IDFQDN       IDType = 2
	IDRFC822Addr IDType = 3
	IDIPv6Addr   IDType = 5
	IDDERASN1DN  IDType = 9
	IDDERASN1GN  IDType = 10
	IDKeyID      IDType = 11
)

func (t IDType) String() string {
	switch t {
	case IDIPv4Addr:
		return "ID_IPV4_ADDR"
	case IDFQDN:
		return "ID_FQDN"
	case IDRFC822Addr:
		return "ID_RFC822_ADDR"
	case IDIPv6Addr:
		return "ID_IPV6_ADDR"
	case IDDERASN1DN:
		return "ID_DER_ASN1_DN"
	case IDDERASN1GN:
		return "ID_DER_ASN1_GN"
	case IDKeyID:
		return "ID_KEY_ID"
	}
	return fmt.Sprintf("ID(%d)", uint8(t))
}

// AuthMethod is an AUTH payload method (RFC 7296 §3.8).
type AuthMethod uint8

// Authentication methods.
const (
	AuthRSASig AuthMethod = 1
	AuthPSK    AuthMethod = 2
	AuthDSS    AuthMethod = 3
)

// Traffic selector types (RFC 7296 §3.13.1).
const (
	tsIPv4AddrRange uint8 = 7
	tsIPv6AddrRange uint8 = 8
)

// Header flags (RFC 7296 §3.1).
const (
	flagInitiator uint8 = 0x08
	flagVersion   uint8 = 0x10
	flagResponse  uint8 = 0x20
)

// ikeVersion is major version 2, minor 0.
const ikeVersion = 0x20

// headerLen is the fixed IKE header length.
const headerLen = 28

// nonESPMarker precedes IKE messages on the NAT-T port (RFC 3948 §2.2).
var nonESPMarker = []byte{0, 0, 0, 0}
