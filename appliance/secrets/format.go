package secrets

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
)

// The data file is a header followed by the AES-256-GCM ciphertext (with its
// 16-byte tag) of a JSON object mapping paths to base64 values. The whole
// header is the additional authenticated data, so no byte of the file can
// change unnoticed.
//
//	offset size
//	0      8    magic "MLBLSECR"
//	8      2    format version, big endian (1)
//	10     8    key id: HMAC-SHA256(key, keyIDLabel)[:8]
//	18     12   GCM nonce, fresh from crypto/rand on every write
//	30     n+16 ciphertext and tag
//
// The key id lets a wrong key be told apart from a damaged file; it reveals
// nothing about the key.
const (
	magic       = "MLBLSECR"
	version     = 1
	keySize     = 32
	keyIDLen    = 8
	nonceOffset = len(magic) + 2 + keyIDLen
	headerLen   = nonceOffset + 12
	keyIDLabel  = "malleable secrets key id v1"
)

// sealer encrypts and decrypts the data file under one key.
type sealer struct {
	aead  cipher.AEAD
	keyID []byte
}

func newSealer(key []byte) (*sealer, error) {
	if len(key) != keySize {
		return nil, fmt.Errorf("%w: key file holds %d bytes, want %d", ErrBadKey, len(key), keySize)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadKey, err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadKey, err)
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(keyIDLabel))
	return &sealer{aead: aead, keyID: mac.Sum(nil)[:keyIDLen]}, nil
}

// seal returns the complete data file for m.
func (s *sealer) seal(m map[string][]byte) ([]byte, error) {
	plain, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode secrets: %w", err)
	}
	defer clear(plain)
	header := make([]byte, headerLen)
	copy(header, magic)
	binary.BigEndian.PutUint16(header[len(magic):], version)
	copy(header[len(magic)+2:], s.keyID)
	rand.Read(header[nonceOffset:]) // never fails (crypto/rand)
	out := make([]byte, 0, headerLen+len(plain)+s.aead.Overhead())
	out = append(out, header...)
	return s.aead.Seal(out, header[nonceOffset:], plain, header), nil
}

// open authenticates and decodes a data file. Its errors wrap ErrCorrupt or
// ErrBadKey and never quote the contents.
func (s *sealer) open(file []byte) (map[string][]byte, error) {
	if len(file) < headerLen+s.aead.Overhead() {
		return nil, fmt.Errorf("%w: %d bytes, shorter than the smallest valid file (%d)",
			ErrCorrupt, len(file), headerLen+s.aead.Overhead())
	}
	if !bytes.Equal(file[:len(magic)], []byte(magic)) {
		return nil, fmt.Errorf("%w: not a malleable secrets file (bad magic)", ErrCorrupt)
	}
	if v := binary.BigEndian.Uint16(file[len(magic):]); v != version {
		return nil, fmt.Errorf("%w: format version %d, this binary reads version %d", ErrCorrupt, v, version)
	}
	if !hmac.Equal(file[len(magic)+2:nonceOffset], s.keyID) {
		return nil, fmt.Errorf("%w: the key file does not belong to this data file (wrong key, or a damaged header)", ErrBadKey)
	}
	header := file[:headerLen]
	plain, err := s.aead.Open(nil, header[nonceOffset:], file[headerLen:], header)
	if err != nil {
		return nil, fmt.Errorf("%w: authentication failed, the data file was modified or damaged", ErrCorrupt)
	}
	defer clear(plain)
	var m map[string][]byte
	// The decoder's message could quote plaintext, so it is not wrapped.
	if json.Unmarshal(plain, &m) != nil {
		return nil, fmt.Errorf("%w: authenticated contents are not a JSON object of secrets", ErrCorrupt)
	}
	if m == nil {
		m = make(map[string][]byte)
	}
	return m, nil
}
