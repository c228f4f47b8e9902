//! Byte-layout and round-trip tests of the netif ABI.
//!
//! The hand-written byte arrays follow the C layout on a little-endian host
//! (x86, arm64), where Xen guests run; the layout tests are skipped on
//! big-endian hosts.

use proptest::prelude::*;

use super::*;

fn roundtrip<E: RingEntry + PartialEq + core::fmt::Debug>(e: E) {
    let raw = e.encode();
    assert_eq!(raw.as_ref().len(), E::SIZE);
    assert_eq!(E::decode(&raw), e);
    assert_eq!(E::decode_prefix(raw.as_ref()), Some(e));
}

#[test]
fn decode_prefix_rejects_short_input() {
    assert_eq!(TxRequest::decode_prefix(&[0u8; 11]), None);
    assert!(TxRequest::decode_prefix(&[0u8; 16]).is_some());
}

#[cfg(target_endian = "little")]
#[test]
fn tx_request_layout() {
    let req = TxRequest { gref: 0x1122_3344, offset: 0x5566, flags: NETTXF_EXTRA_INFO, id: 0x99aa, size: 0xbbcc };
    let bytes = [0x44, 0x33, 0x22, 0x11, 0x66, 0x55, 0x08, 0x00, 0xaa, 0x99, 0xcc, 0xbb];
    assert_eq!(req.encode(), bytes);
    assert_eq!(TxRequest::decode(&bytes), req);
    assert!(req.has_flag(NETTXF_EXTRA_INFO));
    assert!(!req.has_flag(NETTXF_MORE_DATA));
}

#[cfg(target_endian = "little")]
#[test]
fn tx_response_layout() {
    let rsp = TxResponse { id: 0x0102, status: NETIF_RSP_DROPPED };
    let bytes = [0x02, 0x01, 0xfe, 0xff];
    assert_eq!(rsp.encode(), bytes);
    assert_eq!(TxResponse::decode(&bytes), rsp);
}

#[cfg(target_endian = "little")]
#[test]
fn rx_layouts() {
    let req = RxRequest { id: 0x0102, pad: 0, gref: 0x0a0b_0c0d };
    assert_eq!(req.encode(), [0x02, 0x01, 0, 0, 0x0d, 0x0c, 0x0b, 0x0a]);
    let rsp = RxResponse { id: 7, offset: 0x0100, flags: NETRXF_MORE_DATA | NETRXF_CSUM_BLANK, status: 1500 };
    let bytes = [7, 0, 0x00, 0x01, 0x06, 0x00, 0xdc, 0x05];
    assert_eq!(rsp.encode(), bytes);
    assert_eq!(RxResponse::decode(&bytes), rsp);
    assert!(rsp.has_flag(NETRXF_MORE_DATA));
}

#[cfg(target_endian = "little")]
#[test]
fn ctrl_layouts() {
    let req = CtrlRequest { id: 1, ty: XEN_NETIF_CTRL_TYPE_SET_HASH_KEY, data: [0x10, 40, 0x0302_0100] };
    let bytes = [1, 0, 3, 0, 0x10, 0, 0, 0, 40, 0, 0, 0, 0x00, 0x01, 0x02, 0x03];
    assert_eq!(req.encode(), bytes);
    assert_eq!(CtrlRequest::decode(&bytes), req);
    let rsp = CtrlResponse { id: 1, ty: 3, status: XEN_NETIF_CTRL_STATUS_BUFFER_OVERFLOW, data: 0xdead_beef };
    let bytes = [1, 0, 3, 0, 3, 0, 0, 0, 0xef, 0xbe, 0xad, 0xde];
    assert_eq!(rsp.encode(), bytes);
    assert_eq!(CtrlResponse::decode(&bytes), rsp);
}

#[cfg(target_endian = "little")]
#[test]
fn extra_gso_layout() {
    let extra =
        Extra { info: ExtraInfo::Gso { size: 1448, gso_type: XEN_NETIF_GSO_TYPE_TCPV4, features: 0x0102 }, more: true };
    let raw = extra.encode();
    let bytes = [1, 1, 0xa8, 0x05, 1, 0, 0x02, 0x01];
    assert_eq!(raw.encode(), bytes);
    assert_eq!(Extra::decode(&NetifExtraInfo::decode(&bytes)), Ok(extra));
    assert_eq!(raw.gso(), ExtraGso { size: 1448, gso_type: 1, pad: 0, features: 0x0102 });
    // In a TX slot the 8 bytes are followed by 4 bytes of zero padding.
    let tx = extra.to_tx_request();
    assert_eq!(tx.encode(), [1, 1, 0xa8, 0x05, 1, 0, 0x02, 0x01, 0, 0, 0, 0]);
    assert_eq!(Extra::from_tx_request(&tx), Ok(extra));
}

#[cfg(target_endian = "little")]
#[test]
fn extra_hash_and_xdp_layout() {
    let hash = Extra {
        info: ExtraInfo::Hash {
            hash_type: XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP_BIT,
            algorithm: XEN_NETIF_CTRL_HASH_ALGORITHM_TOEPLITZ as u8,
            value: 0x1234_5678u32.to_le_bytes(),
        },
        more: false,
    };
    assert_eq!(hash.encode().encode(), [4, 0, 1, 1, 0x78, 0x56, 0x34, 0x12]);
    let rsp = hash.to_rx_response();
    assert_eq!(rsp.encode(), [4, 0, 1, 1, 0x78, 0x56, 0x34, 0x12]);
    assert_eq!(Extra::from_rx_response(&rsp), Ok(hash));

    let xdp = Extra { info: ExtraInfo::Xdp { headroom: XEN_NETIF_MAX_XDP_HEADROOM }, more: false };
    assert_eq!(xdp.encode().encode(), [5, 0, 0xff, 0x7f, 0, 0, 0, 0]);
    assert_eq!(xdp.encode().xdp().headroom, 0x7fff);
}

#[test]
fn extra_mcast_layout() {
    let mac = [0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb];
    let add = Extra { info: ExtraInfo::McastAdd(mac), more: false };
    let bytes = [2, 0, 0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb];
    assert_eq!(add.encode().encode(), bytes);
    assert_eq!(add.encode().mcast().addr, mac);
    let del = Extra { info: ExtraInfo::McastDel(mac), more: true };
    assert_eq!(del.encode().encode(), [3, 1, 0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb]);
}

#[test]
fn extra_decode_rejects_invalid_types() {
    for ty in [XEN_NETIF_EXTRA_TYPE_NONE, XEN_NETIF_EXTRA_TYPE_MAX, 7, 0xff] {
        let raw = NetifExtraInfo { ty, flags: 0, u: [0; 6] };
        assert_eq!(Extra::decode(&raw), Err(AbiError::DecodeExtra { ty }));
        assert_eq!(Extra::try_from(raw), Err(AbiError::DecodeExtra { ty }));
    }
    let err = Extra::decode(&NetifExtraInfo { ty: 0, flags: 0, u: [0; 6] }).unwrap_err();
    assert!(err.to_string().contains("decode extra info"));
}

#[test]
fn extra_decode_ignores_unknown_flags() {
    let raw = NetifExtraInfo { ty: XEN_NETIF_EXTRA_TYPE_XDP, flags: 0xfe, u: [0; 6] };
    assert_eq!(Extra::decode(&raw).map(|e| e.more), Ok(false));
    let raw = NetifExtraInfo { flags: 0xff, ..raw };
    assert_eq!(Extra::decode(&raw).map(|e| e.more), Ok(true));
}

#[test]
fn constants_match_netif_h() {
    assert_eq!(XEN_NETIF_NR_SLOTS_MIN, 18);
    assert_eq!(XEN_NETIF_MAX_TX_SIZE, 0xFFFF);
    assert_eq!((NETIF_RSP_DROPPED, NETIF_RSP_ERROR, NETIF_RSP_OKAY, NETIF_RSP_NULL), (-2, -1, 0, 1));
    assert_eq!([NETTXF_CSUM_BLANK, NETTXF_DATA_VALIDATED, NETTXF_MORE_DATA, NETTXF_EXTRA_INFO], [1, 2, 4, 8]);
    assert_eq!(
        [NETRXF_DATA_VALIDATED, NETRXF_CSUM_BLANK, NETRXF_MORE_DATA, NETRXF_EXTRA_INFO, NETRXF_GSO_PREFIX],
        [1, 2, 4, 8, 16]
    );
    assert_eq!(
        [XEN_NETIF_CTRL_HASH_TYPE_IPV4, XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP, XEN_NETIF_CTRL_HASH_TYPE_IPV6],
        [1, 2, 4]
    );
    assert_eq!(XEN_NETIF_CTRL_HASH_TYPE_IPV6_TCP, 8);
    assert_eq!(XEN_NETIF_CTRL_TYPE_SET_HASH_ALGORITHM, 7);
}

fn any_extra() -> impl Strategy<Value = Extra> {
    let info = prop_oneof![
        (any::<u16>(), any::<u8>(), any::<u16>()).prop_map(|(size, gso_type, features)| ExtraInfo::Gso {
            size,
            gso_type,
            features
        }),
        any::<[u8; 6]>().prop_map(ExtraInfo::McastAdd),
        any::<[u8; 6]>().prop_map(ExtraInfo::McastDel),
        (any::<u8>(), any::<u8>(), any::<[u8; 4]>()).prop_map(|(hash_type, algorithm, value)| ExtraInfo::Hash {
            hash_type,
            algorithm,
            value
        }),
        any::<u16>().prop_map(|headroom| ExtraInfo::Xdp { headroom }),
    ];
    (info, any::<bool>()).prop_map(|(info, more)| Extra { info, more })
}

proptest! {
    #[test]
    fn entries_roundtrip(a in any::<u32>(), b in any::<u16>(), c in any::<u16>(), d in any::<u16>(),
                         e in any::<u16>(), f in any::<[u32; 3]>()) {
        roundtrip(TxRequest { gref: a, offset: b, flags: c, id: d, size: e });
        roundtrip(TxResponse { id: b, status: c as i16 });
        roundtrip(RxRequest { id: b, pad: c, gref: a });
        roundtrip(RxResponse { id: b, offset: c, flags: d, status: e as i16 });
        roundtrip(CtrlRequest { id: b, ty: c, data: f });
        roundtrip(CtrlResponse { id: b, ty: c, status: a, data: f[0] });
    }

    #[test]
    fn raw_bytes_roundtrip(bytes in any::<[u8; 12]>()) {
        let [b0, b1, b2, b3, b4, b5, b6, b7, ..] = bytes;
        let eight = [b0, b1, b2, b3, b4, b5, b6, b7];
        prop_assert_eq!(TxRequest::decode(&bytes).encode(), bytes);
        prop_assert_eq!(RxResponse::decode(&eight).encode(), eight);
        prop_assert_eq!(NetifExtraInfo::decode(&eight).encode(), eight);
        // An extra read out of a TX slot keeps the first 8 bytes exactly.
        prop_assert_eq!(NetifExtraInfo::from(TxRequest::decode(&bytes)).encode(), eight);
        prop_assert_eq!(NetifExtraInfo::from(RxResponse::decode(&eight)).encode(), eight);
    }

    #[test]
    fn extra_roundtrip(extra in any_extra()) {
        let raw = extra.encode();
        prop_assert_eq!(raw.ty, extra.info.extra_type());
        prop_assert_eq!(Extra::decode(&raw), Ok(extra));
        prop_assert_eq!(Extra::from_tx_request(&extra.to_tx_request()), Ok(extra));
        prop_assert_eq!(Extra::from_rx_response(&extra.to_rx_response()), Ok(extra));
        roundtrip(raw);
    }

    #[test]
    fn extra_decode_total(bytes in any::<[u8; 8]>()) {
        // Any slot content decodes to Ok or DecodeExtra, never panics; valid
        // types re-encode to the same type/more bit.
        let raw = NetifExtraInfo::decode(&bytes);
        match Extra::decode(&raw) {
            Ok(e) => {
                prop_assert!(raw.ty > XEN_NETIF_EXTRA_TYPE_NONE && raw.ty < XEN_NETIF_EXTRA_TYPE_MAX);
                prop_assert_eq!(e.encode().ty, raw.ty);
                prop_assert_eq!(e.more, raw.flags & XEN_NETIF_EXTRA_FLAG_MORE != 0);
            }
            Err(AbiError::DecodeExtra { ty }) => {
                prop_assert_eq!(ty, raw.ty);
                prop_assert!(ty == 0 || ty >= XEN_NETIF_EXTRA_TYPE_MAX);
            }
        }
    }
}
