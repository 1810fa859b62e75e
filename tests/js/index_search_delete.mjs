// The AWS SDK for JavaScript v3, unchanged but for the endpoint: index -> search -> delete.
// Run by tests/test_rekognition_auth.py; prints one JSON line of what the service answered.
import { readFileSync } from "node:fs";
import {
  RekognitionClient,
  CreateCollectionCommand,
  IndexFacesCommand,
  SearchFacesByImageCommand,
  DeleteFacesCommand,
  DeleteCollectionCommand,
  ListFacesCommand,
} from "@aws-sdk/client-rekognition";

const [endpoint, keyId, secret, collection, indexed, probe] = process.argv.slice(2);
const client = new RekognitionClient({
  endpoint,
  region: "us-east-1",
  credentials: { accessKeyId: keyId, secretAccessKey: secret },
  maxAttempts: 1,
});

await client.send(new CreateCollectionCommand({ CollectionId: collection }));
const index = await client.send(
  new IndexFacesCommand({
    CollectionId: collection,
    Image: { Bytes: readFileSync(indexed) },
    ExternalImageId: "js-indexed",
    MaxFaces: 1,
  }),
);
const faceId = index.FaceRecords[0].Face.FaceId;
const search = await client.send(
  new SearchFacesByImageCommand({ CollectionId: collection, Image: { Bytes: readFileSync(probe) } }),
);
const deleted = await client.send(new DeleteFacesCommand({ CollectionId: collection, FaceIds: [faceId] }));
const after = await client.send(new ListFacesCommand({ CollectionId: collection }));
await client.send(new DeleteCollectionCommand({ CollectionId: collection }));
console.log(
  JSON.stringify({
    faceId,
    externalImageId: index.FaceRecords[0].Face.ExternalImageId,
    matches: search.FaceMatches.map((m) => ({ faceId: m.Face.FaceId, similarity: m.Similarity })),
    deleted: deleted.DeletedFaces,
    remaining: after.Faces.length,
  }),
);
