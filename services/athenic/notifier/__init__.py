"""`athenic-notifier`: tells phones (FCM, APNs) and webhooks that a turn is finished."""
